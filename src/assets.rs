//! Finding a requested file under the asset roots without ever leaving them.
//! Shared by the HTTP and TFTP adapters: both hand a client-chosen path to
//! [`resolve`] and serve only what it returns.
//!
//! The rule (docs/decisions.md, "Loader paths"): the request is a clean
//! relative path (no `..`, not absolute). Under `assets_dir` the file's real
//! path must stay inside `assets_dir`. Under a search path it may leave the
//! search path only through directories and symlinks that no one but root (or
//! the user pxed runs as) can change, as a package manager installs them:
//! Debian's `/usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi` is served, a link
//! planted by anyone else, or one that passes through a directory others can
//! write to (`/tmp`), is refused.
//!
//! Before the roots come the operator's [`Files`] (`[server.files]`): a name
//! served from a file the config names (`shimx64.efi` from Debian's
//! `/usr/lib/shim/shimx64.efi.signed`), wherever it is, because the operator
//! named it. A mapped file that is not there falls through to the roots.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssetError {
    /// The request itself is not acceptable (traversal, absolute path, NUL, …).
    #[error("refused path: {0}")]
    Refused(&'static str),
    #[error("file not found")]
    NotFound,
}

const OUTSIDE_ASSETS: &str = "symlink leads outside the asset root";
const UNTRUSTED_LINK: &str =
    "symlink leads outside the search path through a link or directory not owned by root";
/// Symlinks followed in one lookup, as Linux's MAXSYMLINKS.
const MAX_LINKS: usize = 40;

/// Names served from files the config names (`[server.files]`): served
/// name (a clean relative path) → file.
pub type Files = BTreeMap<String, PathBuf>;

/// Where files are served from, in lookup order.
#[derive(Debug, Clone, Copy)]
pub struct Roots<'a> {
    /// Looked up first, by the exact name.
    pub files: &'a Files,
    /// The operator's directory: nothing under it leads out of it.
    pub assets: &'a Path,
    /// Read-only distribution directories (`/usr/lib/ipxe`, …), searched
    /// after `assets`; see the module doc for their symlinks.
    pub search: &'a [PathBuf],
}

impl<'a> Roots<'a> {
    /// Every root, in lookup order.
    pub fn paths(&self) -> impl Iterator<Item = &'a Path> {
        std::iter::once(self.assets).chain(self.search.iter().map(PathBuf::as_path))
    }
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

/// The first regular file named `request` under one of `roots`, in order
/// (see the module doc for which symlinks are followed).
pub fn resolve(roots: Roots, request: &str) -> Result<PathBuf, AssetError> {
    let relative = check_relative(request)?;
    if let Some(file) = roots.files.get(request.trim_start_matches("./")) {
        // Any error (not there, a loop, a permission) means "not mapped
        // here": the roots may hold the file.
        if let Some(real) = file.canonicalize().ok().filter(|p| p.is_file()) {
            return Ok(real);
        }
    }
    let search = roots.search.iter().map(|p| (p.as_path(), true));
    let mut refused = None;
    for (root, is_search_path) in std::iter::once((roots.assets, false)).chain(search) {
        match resolve_in(root, relative, is_search_path) {
            Ok(file) => return Ok(file),
            Err(e @ AssetError::Refused(_)) => refused = Some(e),
            Err(AssetError::NotFound) => {}
        }
    }
    Err(refused.unwrap_or(AssetError::NotFound))
}

fn resolve_in(root: &Path, relative: &Path, is_search_path: bool) -> Result<PathBuf, AssetError> {
    let real_root = root.canonicalize().map_err(|_| AssetError::NotFound)?;
    // Any error but "not found" (a loop, a permission) also means "not here":
    // the next root may have the file.
    let real = real_root
        .join(relative)
        .canonicalize()
        .map_err(|_| AssetError::NotFound)?;
    let real = if real.starts_with(&real_root) {
        real
    } else if is_search_path {
        owner_only_path(&real_root, relative)?
    } else {
        return Err(AssetError::Refused(OUTSIDE_ASSETS));
    };
    if real.is_file() {
        Ok(real)
    } else {
        Err(AssetError::NotFound)
    }
}

/// One step of a path walk.
enum Step {
    Up,
    Name(OsString),
}

fn push_steps(pending: &mut Vec<Step>, path: &Path) {
    // `pending` is a stack: push the last component first.
    for c in path.components().rev() {
        match c {
            Component::ParentDir => pending.push(Step::Up),
            Component::Normal(n) => pending.push(Step::Name(n.to_os_string())),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

/// The real path of `relative` under the (canonical) search path `root`,
/// resolved one component at a time: every directory a name is looked up in,
/// and every symlink followed, must be [`owner_only`]. So whoever chose where
/// the path leads could already read the file it leads to.
fn owner_only_path(root: &Path, relative: &Path) -> Result<PathBuf, AssetError> {
    let trusted = trusted_owners();
    let mut at = root.to_path_buf();
    let mut pending = Vec::new();
    push_steps(&mut pending, relative);
    let mut links = 0;
    while let Some(step) = pending.pop() {
        let name = match step {
            // `at` holds no symlink (each one is resolved below), so going up
            // by removing its last component is the real parent.
            Step::Up => {
                at.pop();
                continue;
            }
            Step::Name(n) => n,
        };
        let dir = std::fs::metadata(&at).map_err(not_found)?;
        if !owner_only(&dir, &trusted) {
            return Err(AssetError::Refused(UNTRUSTED_LINK));
        }
        let next = at.join(&name);
        let meta = std::fs::symlink_metadata(&next).map_err(not_found)?;
        if !meta.file_type().is_symlink() {
            at = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS || !owner_only(&meta, &trusted) {
            return Err(AssetError::Refused(UNTRUSTED_LINK));
        }
        let target = std::fs::read_link(&next).map_err(not_found)?;
        if target.is_absolute() {
            at = PathBuf::from("/");
        }
        push_steps(&mut pending, &target);
    }
    Ok(at)
}

fn not_found(_: io::Error) -> AssetError {
    AssetError::NotFound
}

/// Root, and the user pxed runs as (who can read whatever pxed serves anyway).
fn trusted_owners() -> [u32; 2] {
    [0, nix::unistd::geteuid().as_raw()]
}

/// Owned by a trusted user, and (for a directory) writable by no one else.
/// A symlink's own mode bits mean nothing on Linux; its owner is who made it.
fn owner_only(meta: &std::fs::Metadata, trusted: &[u32]) -> bool {
    let writable_by_others = !meta.file_type().is_symlink() && meta.mode() & 0o022 != 0;
    trusted.contains(&meta.uid()) && !writable_by_others
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

    /// `assets` and one search path `search` under a fresh directory, with
    /// `outside/file` beside them (the tempdir is the test's own, mode 0700).
    fn layout() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let assets = dir.path().join("assets");
        let search = dir.path().join("search");
        for d in [&assets, &search, &dir.path().join("outside")] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(assets.join("ok"), b"x").unwrap();
        std::fs::write(dir.path().join("outside/file"), b"s").unwrap();
        (dir, assets, vec![search])
    }

    #[test]
    fn symlinks_out_of_assets_dir_are_refused() {
        let (dir, assets, search) = layout();
        let roots = Roots {
            files: &Files::new(),
            assets: &assets,
            search: &search,
        };
        std::os::unix::fs::symlink(dir.path().join("outside/file"), assets.join("escape")).unwrap();
        std::os::unix::fs::symlink("../outside/file", assets.join("relative")).unwrap();
        assert!(resolve(roots, "ok").is_ok());
        for name in ["escape", "relative"] {
            assert_eq!(
                resolve(roots, name),
                Err(AssetError::Refused(OUTSIDE_ASSETS))
            );
        }
        assert_eq!(resolve(roots, "missing"), Err(AssetError::NotFound));
    }

    #[test]
    fn search_path_links_leave_it_only_through_owner_only_places() {
        let (dir, assets, search) = layout();
        let roots = Roots {
            files: &Files::new(),
            assets: &assets,
            search: &search,
        };
        // As a package installs it (`ipxe.efi -> /boot/ipxe.efi`), here
        // relative: the test's own tempdir is writable only by its owner.
        std::os::unix::fs::symlink("../outside/file", search[0].join("loader.efi")).unwrap();
        let served = resolve(roots, "loader.efi").unwrap();
        assert_eq!(
            served,
            dir.path().join("outside/file").canonicalize().unwrap()
        );
        // The same link through a directory others may write to: refused.
        let open = dir.path().join("outside");
        let mode = |m| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(0o777);
        assert_eq!(
            resolve(roots, "loader.efi"),
            Err(AssetError::Refused(UNTRUSTED_LINK))
        );
        mode(0o755);
        // An absolute target passes through /tmp (1777) on most machines.
        if std::fs::metadata(dir.path().parent().unwrap()).is_ok_and(|m| m.mode() & 0o022 != 0) {
            std::os::unix::fs::symlink(dir.path().join("outside/file"), search[0].join("abs"))
                .unwrap();
            assert_eq!(
                resolve(roots, "abs"),
                Err(AssetError::Refused(UNTRUSTED_LINK))
            );
        }
        // A link owned by someone else (as root: chown it to nobody).
        if nix::unistd::geteuid().is_root() {
            let link = search[0].join("planted");
            std::os::unix::fs::symlink("../outside/file", &link).unwrap();
            std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
            assert_eq!(
                resolve(roots, "planted"),
                Err(AssetError::Refused(UNTRUSTED_LINK))
            );
        }
        // Loops end.
        std::os::unix::fs::symlink("loop", search[0].join("loop")).unwrap();
        assert_eq!(resolve(roots, "loop"), Err(AssetError::NotFound));
    }

    /// `[server.files]`: a mapped name is served from its file wherever it
    /// is, before the roots; a mapped file that is missing falls through to
    /// the roots; only the exact name is mapped.
    #[test]
    fn mapped_names_come_first_and_fall_through_when_missing() {
        let (dir, assets, search) = layout();
        std::fs::write(assets.join("shimx64.efi"), b"operator's").unwrap();
        std::fs::write(assets.join("grubx64.efi"), b"operator's grub").unwrap();
        let files: Files = [
            ("shimx64.efi", dir.path().join("outside/file")),
            ("grubx64.efi", dir.path().join("outside/missing")),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_string(), p))
        .collect();
        let roots = Roots {
            files: &files,
            assets: &assets,
            search: &search,
        };
        let outside = dir.path().join("outside/file").canonicalize().unwrap();
        assert_eq!(resolve(roots, "shimx64.efi"), Ok(outside.clone()));
        assert_eq!(resolve(roots, "./shimx64.efi"), Ok(outside));
        assert_eq!(
            resolve(roots, "grubx64.efi"),
            Ok(assets.join("grubx64.efi").canonicalize().unwrap())
        );
        assert!(resolve(roots, "x/../shimx64.efi").is_err());
        assert_eq!(
            resolve(roots, "shimx64.efi.signed"),
            Err(AssetError::NotFound)
        );
    }

    /// Debian's own layout, where it is installed: `/usr/lib/ipxe/ipxe.efi`
    /// is a symlink to `/boot/ipxe.efi`.
    #[test]
    fn debian_ipxe_efi_symlink_is_served() {
        let lib = Path::new("/usr/lib/ipxe");
        if !lib.join("ipxe.efi").is_symlink() {
            eprintln!("skipped: /usr/lib/ipxe/ipxe.efi is not a symlink here");
            return;
        }
        let empty = tempfile::tempdir().unwrap();
        let search = [lib.to_path_buf()];
        let roots = Roots {
            files: &Files::new(),
            assets: empty.path(),
            search: &search,
        };
        let served = resolve(roots, "ipxe.efi").unwrap();
        assert_eq!(served, lib.join("ipxe.efi").canonicalize().unwrap());
        assert!(resolve(roots, "../../../etc/passwd").is_err());
    }
}
