//! TLS to PostgreSQL as libpq spells it in a connection URL, so a URL that
//! works with `psql` works with pxed: `sslmode` (`disable`, `allow`,
//! `prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert`,
//! `sslcert` and `sslkey`. The driver (tokio-postgres) knows only
//! `disable`/`prefer`/`require` and none of the files, so they are taken out
//! of the URL here and the certificates are checked by our own connector
//! (`storage/pg/tls.rs`).

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// libpq's `sslmode`, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, the certificate unchecked (`allow`
    /// and `prefer`; the driver cannot try plain first as `allow` would).
    Prefer,
    /// TLS always, the certificate unchecked: encrypted, not authenticated.
    Require,
    /// TLS always, the certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the URL's host.
    VerifyFull,
}

/// The TLS half of `[database] url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// CA certificates (PEM) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for `clientcert=` in
    /// pg_hba.conf.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    /// Splits `url` into the URL the driver takes and the TLS settings;
    /// relative file names are relative to `base_dir` (machines.toml's).
    pub fn from_url(url: &str, base_dir: &Path) -> Result<(String, TlsSettings), String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let (mut mode, mut root, mut cert, mut key) = (None, None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || {
                percent_decode_str(v)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .map_err(|_| format!("{k}: not UTF-8"))
            };
            match k {
                "sslmode" => mode = Some(value()?),
                "sslrootcert" => root = Some(value()?),
                "sslcert" => cert = Some(value()?),
                "sslkey" => key = Some(value()?),
                _ => kept.push(pair),
            }
        }
        let path = |p: String| base_dir.join(p);
        if root.as_deref() == Some("system") {
            return Err("sslrootcert=system is not supported: name the CA file, e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt".into());
        }
        let mode = match (mode.as_deref().unwrap_or("prefer"), &root) {
            ("disable", _) => TlsMode::Disable,
            ("allow" | "prefer", _) => TlsMode::Prefer,
            // libpq: `require` with a root certificate behaves as verify-ca.
            ("require", None) => TlsMode::Require,
            ("require" | "verify-ca", Some(_)) => TlsMode::VerifyCa,
            ("verify-full", Some(_)) => TlsMode::VerifyFull,
            (m @ ("verify-ca" | "verify-full"), None) => {
                return Err(format!(
                    "sslmode={m} needs sslrootcert=<file of CA certificates>"
                ))
            }
            (m, _) => {
                return Err(format!(
                "sslmode={m}: expected disable, allow, prefer, require, verify-ca or verify-full"
            ))
            }
        };
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((path(c), path(k))),
            (None, None) => None,
            _ => return Err("sslcert and sslkey go together".into()),
        };
        kept.push(match mode {
            TlsMode::Disable => "sslmode=disable",
            TlsMode::Prefer => "sslmode=prefer",
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => "sslmode=require",
        });
        let settings = TlsSettings {
            mode,
            root_cert: root.map(path),
            client_cert,
        };
        Ok((format!("{base}?{}", kept.join("&")), settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_become_settings_and_the_driver_keeps_the_rest() {
        let base = Path::new("/etc/pxed");
        let cases: &[(&str, &str, TlsMode, Option<&str>)] = &[
            ("postgres://p@h/db", "postgres://p@h/db?sslmode=prefer", TlsMode::Prefer, None),
            ("postgres://p@h/db?sslmode=disable", "postgres://p@h/db?sslmode=disable", TlsMode::Disable, None),
            ("postgres://p@h/db?sslmode=allow", "postgres://p@h/db?sslmode=prefer", TlsMode::Prefer, None),
            ("postgres://p@h/db?sslmode=require", "postgres://p@h/db?sslmode=require", TlsMode::Require, None),
            ("postgres://p@h/db?sslmode=require&sslrootcert=ca.pem", "postgres://p@h/db?sslmode=require", TlsMode::VerifyCa, Some("/etc/pxed/ca.pem")),
            ("postgres://p@h/db?sslmode=verify-ca&sslrootcert=%2Fs%2Fca.pem", "postgres://p@h/db?sslmode=require", TlsMode::VerifyCa, Some("/s/ca.pem")),
            ("postgres://p@h/db?connect_timeout=3&sslmode=verify-full&sslrootcert=/ca.pem&application_name=x", "postgres://p@h/db?connect_timeout=3&application_name=x&sslmode=require", TlsMode::VerifyFull, Some("/ca.pem")),
        ];
        for (url, driver, mode, root) in cases {
            let (d, s) = TlsSettings::from_url(url, base).unwrap();
            assert_eq!((d.as_str(), s.mode), (*driver, *mode), "{url}");
            assert_eq!(s.root_cert.as_deref(), root.map(Path::new), "{url}");
        }
    }

    #[test]
    fn unusable_tls_parameters_are_refused_in_words() {
        let cases = [
            ("postgres://p@h/db?sslmode=verify-full", "needs sslrootcert"),
            ("postgres://p@h/db?sslmode=verify-ca", "needs sslrootcert"),
            (
                "postgres://p@h/db?sslmode=strict",
                "expected disable, allow",
            ),
            (
                "postgres://p@h/db?sslmode=verify-full&sslrootcert=system",
                "not supported",
            ),
            ("postgres://p@h/db?sslcert=c.pem", "go together"),
        ];
        for (url, want) in cases {
            let e = TlsSettings::from_url(url, Path::new("/")).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn a_client_certificate_is_read_beside_the_config() {
        let (_, s) = TlsSettings::from_url(
            "postgres://p@h/db?sslmode=require&sslcert=c.pem&sslkey=k.pem",
            Path::new("/etc/pxed"),
        )
        .unwrap();
        assert_eq!(
            s.client_cert,
            Some(("/etc/pxed/c.pem".into(), "/etc/pxed/k.pem".into()))
        );
    }
}
