//! One storage contract, every backend: the same lease, boot-event and
//! machine-state sequence run against SQLite files and against a real
//! PostgreSQL (an `initdb` cluster of the test's own, see tests/common/pg.rs),
//! through the library's store traits. PostgreSQL also gets what only a
//! shared store has: a second server whose conflicting binding is refused,
//! whose events land in the same record, and whose override changes the
//! first one sees.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::pg::{self, Postgres};
use common::ConfigDir;
use pxed::config::Config;
use pxed::core::{BootOverride, Mac};
use pxed::dhcp::leases::{Lease, LeaseOp, LeaseStore, Leases, State};
use pxed::events::{Event, EventLog, Query, Recorder, Retention, Stage};
use pxed::machines::{Callback, Labels, MachineStore};
use pxed::storage::Backend;

/// One server's view of a backend: its config (named `name`), the backend
/// opened on the test's runtime, and that runtime.
struct Server {
    _dir: ConfigDir,
    config: Arc<Config>,
    backend: Backend,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Server {
    fn new(
        name: &str,
        database: &str,
        dir_of: Option<&ConfigDir>,
        rt: &Arc<tokio::runtime::Runtime>,
    ) -> Server {
        let dir = ConfigDir::new(
            &format!("name = \"{name}\"\nhttp_listen = \"127.0.0.1:0\"\ntftp_listen = \"\""),
            &format!("{database}\n[dhcp]\nlease_db = \"{}\"\n[[rule]]\nname = \"default\"\nkernel = \"vmlinuz\"",
                dir_of.map_or("leases.sqlite".to_string(), |d| d.path().join("leases.sqlite").display().to_string())),
        );
        let config = pxed::config::load(&dir.config()).unwrap_or_else(|e| panic!("{e}"));
        let backend = {
            let _in = rt.enter();
            Backend::open(&config).unwrap()
        };
        rt.block_on(backend.ready()).unwrap();
        Server {
            _dir: dir,
            config,
            backend,
            rt: rt.clone(),
        }
    }

    fn leases(&self) -> Box<dyn LeaseStore> {
        let open = self.backend.lease_opener();
        open(&self.config.dhcp).unwrap().store
    }

    fn machines(&self) -> Box<dyn MachineStore> {
        self.backend.machines(&self.config).unwrap()
    }

    fn log(&self) -> Box<dyn EventLog> {
        self.backend.event_log(&self.config).unwrap()
    }

    fn recorder(&self) -> Recorder {
        Recorder::new(self.backend.events(&self.config).unwrap().unwrap().0)
    }
}

/// The servers of one test: one on SQLite, or two sharing a PostgreSQL.
struct Env {
    a: Server,
    b: Option<Server>,
    _pg: Option<Postgres>,
}

fn sqlite() -> Env {
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    Env {
        a: Server::new("a", "", None, &rt),
        b: None,
        _pg: None,
    }
}

fn postgres(what: &str) -> Option<Env> {
    if !pg::available(what) {
        return None;
    }
    let pg = Postgres::start();
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let section = pg.section("pxed");
    let a = Server::new("a", &section, None, &rt);
    let b = Server::new("b", &section, None, &rt);
    Some(Env {
        a,
        b: Some(b),
        _pg: Some(pg),
    })
}

const MAC_A: Mac = Mac([0x52, 0x54, 0, 0x18, 0, 1]);
const MAC_B: Mac = Mac([0x52, 0x54, 0, 0x18, 0, 2]);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bound(rows: &[Lease]) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let mut v: Vec<_> = rows
        .iter()
        .filter(|l| l.state == State::Bound)
        .map(|l| (l.ip, l.client.clone()))
        .collect();
    v.sort();
    v
}

fn leases_conform(env: Env) {
    let x = Ipv4Addr::new(10, 18, 0, 10);
    let y = Ipv4Addr::new(10, 18, 0, 11);
    let t = now();
    let mut store = env.a.leases();
    let mut table = Leases::default();
    let applied = store
        .apply(&table.take(x, b"A", MAC_A, State::Bound, t + 600))
        .unwrap();
    assert!(applied.refused.is_empty());
    assert_eq!(bound(&store.load().unwrap()), vec![(x, b"A".to_vec())]);
    // The client moves: its old address is given up, the new one bound.
    let ops = table.take(y, b"A", MAC_A, State::Bound, t + 600);
    assert!(matches!(&ops[0], LeaseOp::Delete { ip, .. } if *ip == x));
    assert!(store.apply(&ops).unwrap().refused.is_empty());
    assert_eq!(bound(&store.load().unwrap()), vec![(y, b"A".to_vec())]);
    // A second open of the same store reads the same leases.
    let reopened = Leases::from_stored(env.a.leases().load().unwrap());
    assert_eq!(reopened.of_client(b"A").map(|l| l.ip), Some(y));

    let Some(b) = &env.b else { return };
    // Server b, which never saw a's table: x is free again, y is a's client's.
    let mut other = b.leases();
    let mut b_table = Leases::default();
    let free = other
        .apply(&b_table.take(x, b"B", MAC_B, State::Bound, t + 600))
        .unwrap();
    assert!(free.refused.is_empty(), "x was given up: {free:?}");
    let taken = b_table.take(y, b"B", MAC_B, State::Bound, t + 600);
    let refused = other.apply(&taken).unwrap();
    assert_eq!(refused.refused, vec![taken.len() - 1], "y is held by A");
    assert_eq!(refused.holders.len(), 1);
    assert_eq!(
        (refused.holders[0].ip, refused.holders[0].client.as_slice()),
        (y, &b"A"[..])
    );
    // The table learns the holder: y is no longer free for B there.
    b_table.learn(refused.holders[0].clone(), t);
    assert!(!b_table.is_free_for(y, b"B", t));
    // The holder itself renews through b.
    let renew = b_table.take(y, b"A", MAC_A, State::Bound, t + 900);
    assert!(other.apply(&renew).unwrap().refused.is_empty());
    // An expired lease is anybody's.
    let z = Ipv4Addr::new(10, 18, 0, 12);
    assert!(store
        .apply(&[LeaseOp::Put(Lease {
            ip: z,
            client: b"A".to_vec(),
            mac: MAC_A,
            expires: t - 1,
            state: State::Bound
        })])
        .unwrap()
        .refused
        .is_empty());
    assert!(other
        .apply(&[LeaseOp::Put(Lease {
            ip: z,
            client: b"C".to_vec(),
            mac: MAC_B,
            expires: t + 60,
            state: State::Bound
        })])
        .unwrap()
        .refused
        .is_empty());
    // a's follow delivers what b wrote.
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    store.follow(tx);
    let learned = env
        .a
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await })
        .unwrap()
        .unwrap();
    assert!(
        learned.iter().any(|l| l.ip == z && l.client == b"C"),
        "{learned:?}"
    );
}

fn events_conform(env: Env) {
    let mut rec = env.a.recorder();
    let ip: std::net::IpAddr = "10.18.0.5".parse().unwrap();
    let mut batch = vec![
        Event::new(Stage::Dhcp, "ok", "request → ack")
            .mac(Some(MAC_A))
            .ip(ip)
            .rule(Some("by-mac")),
        Event::new(Stage::Tftp, "ok", "undionly.kpxe").ip(ip),
        Event::new(Stage::Script, "ok", "script")
            .mac(Some(MAC_A))
            .ip(ip)
            .rule(Some("by-product")),
        Event::new(Stage::Script, "ok", "script")
            .mac(Some(MAC_A))
            .ip(ip)
            .rule(Some("by-product")),
    ];
    rec.write(&mut batch).unwrap();
    if let Some(b) = &env.b {
        let mut other = b.recorder();
        other
            .write(&mut vec![
                Event::new(Stage::Dhcp, "ok", "discover → offer").mac(Some(MAC_B))
            ])
            .unwrap();
    }
    let log = env.a.log();
    let rt = &env.a.rt;
    let one = rt
        .block_on(log.query(Query {
            mac: Some(MAC_A),
            limit: 100,
            ..Default::default()
        }))
        .unwrap();
    let steps: Vec<_> = one
        .iter()
        .map(|e| (e.stage.as_str(), e.count, e.server.as_deref()))
        .collect();
    assert_eq!(
        steps,
        [
            ("dhcp", 1, Some("a")),
            ("tftp", 1, Some("a")),
            ("script", 2, Some("a"))
        ]
    );
    let all = rt
        .block_on(log.query(Query {
            limit: 100,
            ..Default::default()
        }))
        .unwrap();
    let servers: Vec<_> = all.iter().filter_map(|e| e.server.clone()).collect();
    let expect = if env.b.is_some() { 4 } else { 3 };
    assert_eq!(all.len(), expect, "every server's steps in one record");
    assert_eq!(servers.iter().filter(|s| *s == "b").count(), expect - 3);
    let machines = rt.block_on(log.machines(100)).unwrap();
    let m = machines
        .iter()
        .find(|m| m.mac == MAC_A.to_string())
        .unwrap();
    assert_eq!(
        (m.rule.as_deref(), m.ip.as_deref()),
        (Some("by-product"), Some("10.18.0.5"))
    );
    let last = rt.block_on(log.last_id()).unwrap();
    assert_eq!(last, all.iter().map(|e| e.id).max().unwrap());
    // Retention: everything older than a day goes.
    let keep = Retention {
        keep: Duration::from_secs(86_400),
        max_events: 1000,
    };
    let deleted = rec
        .prune(keep, SystemTime::now() + Duration::from_secs(2 * 86_400))
        .unwrap();
    assert_eq!(deleted, expect);
    assert!(rt.block_on(log.machines(100)).unwrap().is_empty());
}

fn once(rule: &str) -> BootOverride {
    BootOverride::Rule {
        rule: rule.into(),
        once: true,
    }
}

fn machines_conform(env: Env) {
    let s = env.a.machines();
    let rt = &env.a.rt;
    rt.block_on(async {
        let v0 = s.version().await.unwrap();
        s.set_override(MAC_A, Some((once("install"), "alice".into())))
            .await
            .unwrap();
        assert!(s.add_token(MAC_A, "t1").await.unwrap());
        assert!(s.add_token(MAC_A, "t2").await.unwrap());
        let got = s.get(MAC_A).await.unwrap().unwrap();
        let o = got.boot_override.unwrap();
        assert_eq!(
            (o.boot, o.set_by.as_str(), o.boots),
            (once("install"), "alice", 2)
        );
        let overrides = s.overrides().await.unwrap();
        assert_eq!(overrides.len(), 1);
        assert_eq!(overrides[0].1.token.as_deref(), Some("t2"));
        let seen = env
            .a
            .backend
            .read_override(&env.a.config, MAC_A)
            .await
            .unwrap();
        assert_eq!(seen, Some(once("install")));
        if let Some(b) = &env.b {
            // Server b sees a's override, and a sees b's consumption move the version.
            let other = b.machines();
            assert_eq!(other.overrides().await.unwrap().len(), 1);
            assert_ne!(s.version().await.unwrap(), v0);
            let v1 = s.version().await.unwrap();
            assert_eq!(
                other.consume(MAC_A, "t1").await.unwrap(),
                Callback::Consumed(once("install"))
            );
            assert_ne!(s.version().await.unwrap(), v1);
        } else {
            assert_eq!(v0, None);
            assert_eq!(s.consume(MAC_A, "nope").await.unwrap(), Callback::Unknown);
            assert_eq!(
                s.consume(MAC_A, "t1").await.unwrap(),
                Callback::Consumed(once("install"))
            );
        }
        assert_eq!(s.consume(MAC_A, "t2").await.unwrap(), Callback::Unknown);
        assert!(s.get(MAC_A).await.unwrap().is_none(), "nothing left");
        let labels: Labels = [("rack".to_string(), "r12".to_string())].into();
        s.set_labels(MAC_B, labels.clone()).await.unwrap();
        s.set_override(MAC_B, Some((BootOverride::Local, "carol".into())))
            .await
            .unwrap();
        s.set_override(MAC_B, None).await.unwrap();
        let mb = s.get(MAC_B).await.unwrap().unwrap();
        assert_eq!((mb.labels, mb.boot_override), (labels, None));
        let all: Vec<Mac> = s
            .list(10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.mac)
            .collect();
        assert_eq!(all, vec![MAC_B]);
    });
}

#[test]
fn leases_on_sqlite() {
    leases_conform(sqlite());
}

#[test]
fn leases_on_postgres() {
    if let Some(env) = postgres("leases on PostgreSQL") {
        leases_conform(env);
    }
}

#[test]
fn events_on_sqlite() {
    events_conform(sqlite());
}

#[test]
fn events_on_postgres() {
    if let Some(env) = postgres("events on PostgreSQL") {
        events_conform(env);
    }
}

#[test]
fn machines_on_sqlite() {
    machines_conform(sqlite());
}

#[test]
fn machines_on_postgres() {
    if let Some(env) = postgres("machine state on PostgreSQL") {
        machines_conform(env);
    }
}

/// `pxed migrate`: a host's SQLite state (leases, events, inventory,
/// overrides) lands in an empty PostgreSQL, where a server reads it; a
/// second run refuses and changes nothing.
#[test]
fn migrate_copies_a_hosts_sqlite_state_into_postgres() {
    if !pg::available("pxed migrate") {
        return;
    }
    let env = sqlite();
    let t = now();
    let mut table = Leases::default();
    let ip = Ipv4Addr::new(10, 18, 0, 20);
    let mut leases = env.a.leases();
    leases
        .apply(&table.take(ip, b"A", MAC_A, State::Bound, t + 600))
        .unwrap();
    let mut batch = vec![Event::new(Stage::Dhcp, "ok", "request → ack")
        .mac(Some(MAC_A))
        .ip(std::net::IpAddr::V4(ip))];
    env.a.recorder().write(&mut batch).unwrap();
    env.a
        .rt
        .block_on(
            env.a
                .machines()
                .set_override(MAC_A, Some((once("install"), "alice".into()))),
        )
        .unwrap();

    let pg = Postgres::start();
    let rt = env.a.rt.clone();
    let target = Server::new("m", &pg.section("pxed"), Some(&env.a._dir), &rt);
    let migrate = || {
        std::process::Command::new(common::pxed_bin())
            .args(["migrate", "--config"])
            .arg(target._dir.config())
            .output()
            .unwrap()
    };
    let out = migrate();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("1 leases, 1 boot events, 1 machines, 1 machine states"),
        "{said}"
    );
    let loaded = target.leases().load().unwrap();
    assert_eq!(bound(&loaded), vec![(ip, b"A".to_vec())]);
    let overrides = rt.block_on(target.machines().overrides()).unwrap();
    assert_eq!(overrides[0].1.boot, once("install"));
    let again = migrate();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty database only"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
