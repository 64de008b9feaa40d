//! Finding a requested file under the asset roots without ever leaving them.
//! Shared by the HTTP and TFTP adapters: both hand a client-chosen path to
//! [`resolve`] and serve only what it returns.

use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssetError {
    /// The request itself is not acceptable (traversal, absolute path, NUL, …).
    #[error("refused path: {0}")]
    Refused(&'static str),
    #[error("file not found")]
    NotFound,
}

/// Checks a client-supplied relative path: no `..`, no absolute or drive
/// prefixes, no backslashes (Windows-style TFTP clients), no NUL or control
/// characters, no empty path.
pub fn check_relative(request: &str) -> Result<&Path, AssetError> {
    if request.is_empty() {
        return Err(AssetError::Refused("empty path"));
    }
    if request.chars().any(|c| c.is_control()) {
        return Err(AssetError::Refused("control character in path"));
    }
    if request.contains('\\') {
        return Err(AssetError::Refused("backslash in path"));
    }
    let path = Path::new(request);
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(AssetError::Refused("`..` in path")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(AssetError::Refused("absolute path"))
            }
        }
    }
    Ok(path)
}

/// The first regular file named `request` under one of `roots`, in order. A file
/// whose real path (after following symlinks) lies outside its root is refused,
/// so a symlink planted in `assets/` cannot expose the rest of the disk.
pub fn resolve<'a>(
    roots: impl IntoIterator<Item = &'a Path>,
    request: &str,
) -> Result<PathBuf, AssetError> {
    let relative = check_relative(request)?;
    let mut refused = None;
    for root in roots {
        let Ok(real_root) = root.canonicalize() else {
            continue;
        };
        let real = match real_root.join(relative).canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => continue,
        };
        if !real.starts_with(&real_root) {
            refused = Some(AssetError::Refused("symlink leads outside the asset root"));
            continue;
        }
        if real.is_file() {
            return Ok(real);
        }
    }
    Err(refused.unwrap_or(AssetError::NotFound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_only() {
        assert!(check_relative("debian/vmlinuz").is_ok());
        assert!(check_relative("./undionly.kpxe").is_ok());
        for bad in [
            "",
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a\\..\\b",
            "a\0b",
            "a\nb",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
        assert!(resolve([root.as_path()], "ok").is_ok());
        assert_eq!(
            resolve([root.as_path()], "escape"),
            Err(AssetError::Refused("symlink leads outside the asset root"))
        );
        assert_eq!(
            resolve([root.as_path()], "missing"),
            Err(AssetError::NotFound)
        );
    }
}
