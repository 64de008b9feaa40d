//! TLS to PostgreSQL as an operator writes it in `[database] url`, with
//! libpq's parameters, against a real PostgreSQL serving TLS on loopback
//! whose pg_hba.conf refuses every unencrypted TCP connection. The
//! certificates are made by `openssl` for the test. What is asserted is
//! what `pxed check` says (the server's own `pg_stat_ssl` view of the
//! session) and that the stores work over it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::pg::{self, Postgres, ServerTls};
use common::ConfigDir;

/// A CA, a server certificate it signs for `localhost` only (no IP name),
/// a client certificate for user `pxed`, and a second, unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.signed("server", "localhost", "subjectAltName=DNS:localhost");
        pki.signed("client", "pxed", "basicConstraints=CA:FALSE");
        pki
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    fn signed(&self, name: &str, cn: &str, ext: &str) {
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(self.file(&format!("{name}.ext")), ext).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

/// Database `certdb` takes only a client certificate; every other TCP
/// connection must be TLS; none may be plain.
const HBA: &str = "hostssl certdb all 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 trust
hostnossl all all 127.0.0.1/32 reject";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lab(what: &str) -> Option<(Pki, Postgres, u16)> {
    if !pg::available(what) || !common::have_tool("openssl", what) {
        return None;
    }
    let pki = Pki::new();
    let port = free_port();
    let pg = Postgres::start_tls(
        port,
        &ServerTls {
            cert: &pki.file("server.pem"),
            key: &pki.file("server.key"),
            client_ca: &pki.file("ca.pem"),
            hba: HBA,
        },
    );
    pg.create_db("certdb");
    Some((pki, pg, port))
}

/// `pxed check` on a config whose `[database] url` is `url`.
fn check(url: &str) -> (bool, String) {
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"",
        &format!("[database]\nurl = \"{url}\"\n[[rule]]\nname = \"default\"\nkernel = \"k\"\n"),
    );
    dir.asset("k", b"kernel");
    common::pxed_check(&dir.config())
}

fn url(host: &str, port: u16, db: &str, params: &str, pki: &Path) -> String {
    let params = params.replace("DIR", &pki.display().to_string());
    format!("postgres://pxed@{host}:{port}/{db}?{params}")
}

#[test]
fn libpq_tls_modes_encrypt_and_authenticate_as_libpq_does() {
    let Some((pki, pg, port)) = lab("PostgreSQL over TLS") else {
        return;
    };
    let dir = pki.dir.path();
    let cases: &[(&str, &str, &str, bool, &str)] = &[
        // (host, database, parameters, check passes, what it says)
        ("localhost", "pxed", "sslmode=verify-full&sslrootcert=DIR/ca.pem", true,
            "reachable over TLS, certificate and host name verified"),
        // The certificate names localhost only: verify-full refuses the
        // address, verify-ca (the chain alone) takes it.
        ("127.0.0.1", "pxed", "sslmode=verify-full&sslrootcert=DIR/ca.pem", true,
            "cannot reach"),
        ("127.0.0.1", "pxed", "sslmode=verify-ca&sslrootcert=DIR/ca.pem", true,
            "reachable over TLS, certificate chain verified"),
        // libpq: require with a root certificate is verify-ca.
        ("localhost", "pxed", "sslmode=require&sslrootcert=DIR/other-ca.pem", true,
            "cannot reach"),
        ("localhost", "pxed", "sslmode=require", true,
            "reachable over TLS, server not authenticated"),
        ("localhost", "pxed", "", true, "reachable over TLS, server not authenticated"),
        ("localhost", "pxed", "sslmode=disable", true, "no encryption"),
        ("localhost", "certdb", "sslmode=verify-full&sslrootcert=DIR/ca.pem&sslcert=DIR/client.pem&sslkey=DIR/client.key",
            true, "reachable over TLS, certificate and host name verified"),
        ("localhost", "certdb", "sslmode=verify-full&sslrootcert=DIR/ca.pem", true,
            "cannot reach"),
        ("localhost", "pxed", "sslmode=verify-full&sslrootcert=DIR/missing.pem", false,
            "missing.pem: cannot read PEM certificates"),
    ];
    for (host, db, params, passes, says) in cases {
        let url = url(host, port, db, params, dir);
        let (ok, out) = check(&url);
        assert_eq!(ok, *passes, "{url}:\n{out}");
        assert!(out.contains(says), "{url}: {says:?} missing:\n{out}");
    }
    let (_, out) = check(&url(
        "localhost",
        port,
        "pxed",
        "sslmode=verify-full&sslrootcert=DIR/other-ca.pem",
        dir,
    ));
    assert!(
        out.contains("UnknownIssuer"),
        "a foreign CA is named as such:\n{out}"
    );
    // libpq never uses TLS over a unix socket, whatever sslmode says.
    let socket = format!(
        "{}?sslmode=verify-full&sslrootcert={}/ca.pem",
        pg.url("pxed"),
        dir.display()
    );
    let (ok, out) = check(&socket);
    assert!(
        ok && out.contains("reachable, not encrypted"),
        "{socket}:\n{out}"
    );
}

/// The stores themselves work over a verified TLS link: the schema is
/// migrated, and the server sees pxed's sessions as encrypted.
#[test]
fn the_schema_is_migrated_over_verified_tls() {
    let Some((pki, pg, port)) = lab("PostgreSQL stores over TLS") else {
        return;
    };
    let url = url(
        "localhost",
        port,
        "pxed",
        "sslmode=verify-full&sslrootcert=DIR/ca.pem",
        pki.dir.path(),
    );
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"",
        &format!("[database]\nurl = \"{url}\"\n[[rule]]\nname = \"default\"\nkernel = \"k\"\n"),
    );
    let config = pxed::config::load(&dir.config()).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = {
        let _in = rt.enter();
        pxed::storage::Backend::open(&config).unwrap()
    };
    rt.block_on(backend.ready()).unwrap();
    let tables = pg.psql(
        "pxed",
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'leases'",
    );
    assert_eq!(tables.trim(), "1", "the lease table exists");
    let sessions = pg.psql(
        "pxed",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'pxed'",
    );
    let (tls, all) = sessions.trim().split_once('|').unwrap();
    assert!(
        all != "0" && tls == all,
        "pxed's sessions, TLS|all: {sessions}"
    );
}
