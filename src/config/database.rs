//! `[database]`: where leases, boot events and machine state live when several
//! pxed share them (docs/ha.md). Absent: each server keeps its own SQLite
//! files (`[dhcp] lease_db`, `[events] db`), as on a single host.
//!
//! ```toml
//! [database]
//! url = "postgres://pxed@db.example/pxed"   # or postgres://pxed@%2Frun%2Fpostgresql/pxed
//! password_file = "/etc/pxed/db-password"   # else PGPASSWORD; never in this file
//! ```
//!
//! TLS takes libpq's URL parameters (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`) with libpq's meanings; see `tls.rs` and docs/ha.md.
//!
//! Restart-only: the pool and the schema are set up once at start.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::Spanned;

use super::{wire, Loader};

pub use super::database_tls::{TlsMode, TlsSettings};

/// The validated `[database]` section (PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// The URL as written (without a password: refused).
    pub url: String,
    /// Read at start; `None`: `PGPASSWORD`, or no password (trust, peer).
    pub password_file: Option<PathBuf>,
    /// The URL without the TLS parameters the driver does not know, and
    /// with `sslmode` in its words (`disable`, `prefer`, `require`).
    pub driver_url: String,
    /// How the connection is encrypted and the server authenticated.
    pub tls: TlsSettings,
}

impl DatabaseConfig {
    /// The driver's connection settings, with the password from
    /// `password_file` or `PGPASSWORD`, and `PGUSER` (else `pxed`) when the
    /// URL names no user.
    pub fn connect_config(&self) -> anyhow::Result<tokio_postgres::Config> {
        let mut c = tokio_postgres::Config::from_str(&self.driver_url)?;
        if c.get_user().is_none() {
            c.user(std::env::var("PGUSER").as_deref().unwrap_or("pxed"));
        }
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("[database] password_file {}: {e}", file.display()))?;
            c.password(text.trim_end_matches(['\n', '\r']));
        } else if let Ok(p) = std::env::var("PGPASSWORD") {
            c.password(p);
        }
        // libpq never uses TLS over a unix socket, whatever sslmode says.
        if c.get_hosts()
            .iter()
            .all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)))
        {
            c.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        if c.get_connect_timeout().is_none() {
            c.connect_timeout(std::time::Duration::from_secs(5));
        }
        c.application_name("pxed");
        Ok(c)
    }
}

impl Loader<'_> {
    pub(super) fn database(
        &mut self,
        w: Option<&Spanned<wire::Database>>,
        base_dir: &Path,
    ) -> Option<DatabaseConfig> {
        let section = w?;
        let w = section.get_ref();
        let Some(url) = &w.url else {
            self.error(
                section,
                "[database] needs url = \"postgres://user@host/db\"",
            );
            return None;
        };
        let text = url.get_ref();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            self.error(url, format!("url {text:?}: only postgres://user@host/db is supported (without [database], SQLite files are used)"));
            return None;
        }
        let (driver_url, tls) = match TlsSettings::from_url(text, base_dir) {
            Ok(split) => split,
            Err(e) => {
                self.error(url, format!("url {text:?}: {e}"));
                return None;
            }
        };
        match tokio_postgres::Config::from_str(&driver_url) {
            Err(e) => {
                self.error(url, format!("url {text:?}: {e}"));
                return None;
            }
            Ok(c) if c.get_password().is_some() => {
                self.error(url, "url holds a password: put it in password_file or PGPASSWORD, never in machines.toml");
                return None;
            }
            Ok(c) if c.get_dbname().is_none() => {
                self.error(
                    url,
                    format!("url {text:?} names no database (postgres://user@host/DATABASE)"),
                );
                return None;
            }
            Ok(_) => {}
        }
        Some(DatabaseConfig {
            url: text.clone(),
            password_file: w.password_file.as_ref().map(|p| base_dir.join(p.get_ref())),
            driver_url,
            tls,
        })
    }
}
