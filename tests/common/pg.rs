//! A real PostgreSQL for a test: Debian's server binaries, a cluster made by
//! `initdb` in a temporary directory, run as the unprivileged `postgres`
//! user and listening on a unix socket only. A socket is a file, so pxed in
//! any network namespace of the test reaches it, and nothing listens on a
//! network port. Stopped (`pg_ctl stop`, i.e. its own postmaster's PID) and
//! removed when dropped. [`Postgres::start_tls`] also listens on a
//! loopback TCP port with TLS, for the tests of pxed's TLS settings.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian installs the server binaries (`postgresql-<major>`).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Whether a PostgreSQL server can be started here (root, to run it as
/// `postgres`, and the package); with PXED_REQUIRE_PRIVILEGED=1 its absence
/// fails the test.
pub fn available(what: &str) -> bool {
    if !super::is_root() {
        return super::skip(what, "not running as root");
    }
    if bin_dir().is_none() {
        return super::skip(what, "PostgreSQL is not installed (Debian `postgresql`)");
    }
    true
}

/// The socket's "port": part of the socket's file name only.
const PORT: u16 = 5432;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `listen_addresses`: empty (the socket only) or `127.0.0.1`.
    listen: &'static str,
}

/// What a TLS-serving cluster is given: its certificate and key, and the
/// CA its clients' certificates must chain to (PEM files).
pub struct ServerTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: &'a Path,
    /// pg_hba.conf lines after `local all all trust`.
    pub hba: &'a str,
}

impl Postgres {
    /// A new cluster, started; user `pxed` (trust), database `pxed`.
    pub fn start() -> Postgres {
        let pg = Postgres::init(PORT, "");
        pg.start_server();
        pg.psql("postgres", "CREATE DATABASE pxed");
        pg
    }

    /// A new cluster that also serves TLS on 127.0.0.1:`port`.
    pub fn start_tls(port: u16, tls: &ServerTls) -> Postgres {
        let pg = Postgres::init(port, "127.0.0.1");
        let data = pg.data();
        for (from, to) in [
            (tls.cert, "server.crt"),
            (tls.key, "server.key"),
            (tls.client_ca, "ca.crt"),
        ] {
            let file = data.join(to);
            std::fs::copy(from, &file).unwrap();
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            chown_postgres(&file);
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write as _;
        writeln!(conf, "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.crt'").unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\n{}\n", tls.hba),
        )
        .unwrap();
        pg.start_server();
        pg.psql("postgres", "CREATE DATABASE pxed");
        pg
    }

    fn init(port: u16, listen: &'static str) -> Postgres {
        let bin = bin_dir().expect("PostgreSQL server binaries");
        let dir = tempfile::Builder::new()
            .prefix("pxed-pg-")
            .tempdir()
            .unwrap();
        chown_postgres(dir.path());
        let pg = Postgres {
            dir,
            bin,
            port,
            listen,
        };
        pg.as_postgres("initdb", |c| {
            c.arg("-D")
                .arg(pg.data())
                .args(["-U", "pxed", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .arg("--no-instructions");
        });
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://pxed@%2Ftmp%2F…:5432/<db>`: the URL pxed is given.
    pub fn url(&self, db: &str) -> String {
        let host = self.socket_dir().display().to_string().replace('/', "%2F");
        format!("postgres://pxed@{host}:{}/{db}", self.port)
    }

    /// A `[database]` section for `db`.
    pub fn section(&self, db: &str) -> String {
        format!("[database]\nurl = \"{}\"\n", self.url(db))
    }

    fn as_postgres(&self, program: &str, args: impl FnOnce(&mut Command)) -> String {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
        args(&mut c);
        let out = c.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-k {} -c listen_addresses={} -p {} -c max_connections=200",
            self.socket_dir().display(),
            self.listen,
            self.port
        );
        let log = self.dir.path().join("server.log");
        self.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(self.data())
                .args(["-o", &opts, "-l"])
                .arg(&log)
                .args(["-w", "start"]);
        });
    }

    /// Stops the server at once (its connections are cut, as when the
    /// database host goes away).
    pub fn stop_server(&self) {
        self.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"]);
        });
    }

    /// Runs `sql` in `db`; the rows, one per line, fields split by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "pxed", "-d", db])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An interactive `psql` on `db`, fed through its stdin (to hold a
    /// transaction open while something else happens); its output is
    /// unaligned, tuples only.
    pub fn session(&self, db: &str) -> std::process::Child {
        Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "pxed", "-d", db])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A fresh database for one test.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_string()
    }
}

fn chown_postgres(dir: &Path) {
    let ok = Command::new("chown")
        .arg("postgres:postgres")
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown postgres {}", dir.display());
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
