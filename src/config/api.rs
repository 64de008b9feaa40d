//! `[server] api_tokens = "path"`: the bearer tokens of the JSON API
//! (`/api/v1/` on the admin listener). The file holds one `name:token` line
//! per client (`#` comments and blank lines allowed); the name is who made a
//! change in the boot-event record. Tokens never come from the command line
//! or `machines.toml` itself, so the config can be shared and versioned.
//! Read at load, like the templates: a reload (SIGHUP, `POST /api/v1/reload`)
//! picks up a changed file; a broken file keeps the last good config serving.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use toml::Spanned;

use super::{ConfigError, Loader};
use crate::core::Location;

/// Shortest token accepted: 16 characters of a random token are already
/// ~80 bits; `openssl rand -hex 32` gives 64.
pub const MIN_TOKEN_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 256;
const MAX_NAME_LEN: usize = 64;

/// One API client.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    token: String,
}

impl std::fmt::Debug for ApiToken {
    /// Never prints the token (configs are logged in debug output).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiToken({:?})", self.name)
    }
}

/// The validated token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokens {
    pub path: PathBuf,
    pub tokens: Vec<ApiToken>,
}

impl ApiTokens {
    /// The name of the client whose token `presented` is. Every token is
    /// compared, each in constant time, so neither the answer's timing nor
    /// which token matched tells anything about the others.
    pub fn name_of(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(t.name.as_str());
            }
        }
        found
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
}

/// Parses the file's text; every problem, with its line and column.
pub fn parse(path: &Path, text: &str) -> Result<Vec<ApiToken>, Vec<ConfigError>> {
    let file: std::sync::Arc<str> = path.display().to_string().into();
    let at = |line: usize, column: usize, reason: String| ConfigError {
        location: Location {
            file: file.clone(),
            line,
            column,
        },
        reason,
    };
    let (mut tokens, mut errors) = (Vec::<ApiToken>::new(), Vec::new());
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let column = raw.len() - raw.trim_start().len() + 1;
        let Some((name, token)) = line.split_once(':') else {
            errors.push(at(i + 1, column, "expected `name:token`".into()));
            continue;
        };
        let (name, token) = (name.trim(), token.trim());
        let token_column = column + line.find(':').unwrap_or(0) + 1;
        if !valid_name(name) {
            errors.push(at(
                i + 1,
                column,
                format!("client name {name:?} must be 1-{MAX_NAME_LEN} letters, digits or . _ @ -"),
            ));
        } else if tokens.iter().any(|t| t.name == name) {
            errors.push(at(
                i + 1,
                column,
                format!("client {name:?} is listed twice"),
            ));
        }
        if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
            errors.push(at(i + 1, token_column, format!("the token of {name:?} must be {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)")));
        } else if !token.chars().all(|c| c.is_ascii_graphic()) {
            errors.push(at(
                i + 1,
                token_column,
                format!("the token of {name:?} may hold only visible ASCII characters"),
            ));
        } else if tokens.iter().any(|t| t.token == token) {
            errors.push(at(
                i + 1,
                token_column,
                format!(
                    "the token of {name:?} is also another client's: each client needs its own"
                ),
            ));
        }
        tokens.push(ApiToken {
            name: name.to_string(),
            token: token.to_string(),
        });
    }
    if tokens.is_empty() && errors.is_empty() {
        errors.push(at(1, 1, "no `name:token` line: the API would refuse everyone (remove api_tokens to turn the API off)".into()));
    }
    if errors.is_empty() {
        Ok(tokens)
    } else {
        Err(errors)
    }
}

impl Loader<'_> {
    /// Reads and validates the token file named by `api_tokens`, if any.
    pub(super) fn api_tokens(
        &mut self,
        v: Option<&Spanned<String>>,
        base_dir: &Path,
    ) -> Option<ApiTokens> {
        let v = v?;
        let path = base_dir.join(v.get_ref());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                // The packaged unit runs as _pxed: a root-only file is the
                // usual cause, and `pxed check` as root does not see it.
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (the packaged service runs as group _pxed: `chgrp _pxed` it, mode 640)"
                } else {
                    ""
                };
                self.error(
                    v,
                    format!("api_tokens: cannot read {}: {e}{hint}", path.display()),
                );
                return None;
            }
        };
        match parse(&path, &text) {
            Ok(tokens) => Some(ApiTokens { path, tokens }),
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }
}

/// A warning when every user may read the token file, or its group may
/// change it. Group read is how the packaged service (group _pxed) reads a
/// root-owned file, so mode 640 is the advice, not 600.
pub fn permission_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o027 != 0).then(|| {
        format!(
            "{}: readable or writable by more than its owner and the service's group (mode {:o}); `chmod 640` it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files() {
        let p = Path::new("tokens");
        let ok = parse(
            p,
            "# ops\nalice: 0123456789abcdef0123\n\n  bob:fedcba9876543210fedc\n",
        )
        .unwrap();
        let tokens = ApiTokens {
            path: p.into(),
            tokens: ok,
        };
        assert_eq!(tokens.name_of("0123456789abcdef0123"), Some("alice"));
        assert_eq!(tokens.name_of("fedcba9876543210fedc"), Some("bob"));
        assert_eq!(tokens.name_of("0123456789abcdef012"), None);
        assert_eq!(tokens.name_of(""), None);
        assert!(
            !format!("{tokens:?}").contains("0123"),
            "debug output hides tokens"
        );
        let cases = [
            (
                "alice 0123456789abcdef0123\n",
                "tokens:1:1: expected `name:token`",
            ),
            (
                "alice:short\n",
                "tokens:1:7: the token of \"alice\" must be",
            ),
            (
                "a b:0123456789abcdef0123\n",
                "tokens:1:1: client name \"a b\"",
            ),
            (
                "a:0123456789abcdef0123\na:1123456789abcdef0123\n",
                "tokens:2:1: client \"a\" is listed twice",
            ),
            (
                "a:0123456789abcdef0123\nb:0123456789abcdef0123\n",
                "tokens:2:3: the token of \"b\" is also another client's",
            ),
            ("# nothing\n", "tokens:1:1: no `name:token` line"),
        ];
        for (text, want) in cases {
            let errors = parse(p, text).unwrap_err();
            let shown = errors[0].to_string();
            assert!(shown.starts_with(want), "{text:?}: {shown}");
        }
    }
}
