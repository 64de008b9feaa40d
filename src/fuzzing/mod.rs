//! The fuzz harness: one function per `cargo fuzz` target (`fuzz/fuzz_targets/`),
//! each feeding arbitrary bytes to the same entry point the daemon uses on
//! what arrives from the network or the operator, over the fixed config in
//! `fuzz/fixture/`, and asserting what must hold for any input. Compiled only
//! for cargo-fuzz (`--cfg fuzzing`) and for unit tests, which replay the
//! committed corpora and regressions (`fuzz/corpus/`, `fuzz/regressions/`)
//! through the same functions on every `cargo test`.
//!
//! Harness code: a panic here *is* the finding, so fixtures that cannot load
//! panic with the reason.

mod config;
mod dhcp;
mod dhcp6;
mod http;
mod tftp;

pub use self::config::config;
#[cfg(test)]
pub(crate) use self::dhcp::stored_leases;
pub use self::dhcp::{answer, br0, broadcast_arrival, dhcp, received, NOW};
#[cfg(test)]
pub(crate) use self::dhcp6::stored_leases6;
pub use self::dhcp6::{answer6, arrival6, dhcp6, unwrap_relays, DUID6};
pub use self::http::http;
pub use self::tftp::tftp;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::config::{Config, TemplateFile, TemplateFiles};

/// `fuzz/fixture/` in this source tree.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixture")
}

fn fixture_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        std::fs::read_to_string(fixture_dir().join("machines.toml"))
            .expect("fuzz/fixture/machines.toml")
    })
}

/// The shipped `boot-templates/`, read once.
pub(crate) fn templates() -> &'static [TemplateFile] {
    static FILES: OnceLock<Vec<TemplateFile>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boot-templates");
        crate::config::read_templates(&dir).unwrap_or_else(|e| panic!("boot-templates/: {e}"))
    })
}

fn load_fixture(text: &str) -> Arc<Config> {
    crate::config::load_text(
        &fixture_dir().join("machines.toml"),
        text,
        TemplateFiles::Given(templates()),
    )
    .unwrap_or_else(|e| panic!("fuzz/fixture/machines.toml: {e}"))
}

/// The fixture config: full DHCP.
pub fn full_config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG.get_or_init(|| load_fixture(fixture_text())).clone()
}

/// The fixture config in ProxyDHCP mode.
pub(crate) fn proxy_config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            load_fixture(&fixture_text().replace("mode = \"full\"", "mode = \"proxy\""))
        })
        .clone()
}

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The first word of every line that is not blank or a comment: what a
/// script or menu does, whatever values sit in its arguments.
pub fn structure(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect()
}

#[cfg(test)]
mod tests {
    use dhcproto::v4::{DhcpOption, Message, OptionCode};
    use dhcproto::Decodable;

    use super::dhcp::stored_leases;
    use super::http::serve_bytes;
    use super::*;
    use crate::dhcp::exchange::Port;
    use crate::dhcp::leases::Leases;
    use crate::dhcp::Outcome;

    /// Every committed seed and regression input of `target`, replayed.
    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for dir in [
            root.join("corpus").join(target),
            root.join("regressions").join(target),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                let result = std::panic::catch_unwind(|| run(&bytes));
                assert!(result.is_ok(), "{} fails", entry.path().display());
                n += 1;
            }
        }
        n
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target)
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The harness reaches the answers, not only the parsers: captured
    /// clients get what they get from the daemon.
    #[test]
    fn seeds_get_real_answers() {
        let full = full_config();
        let br0 = br0();
        let bootfile = |name: &str| {
            let datagram = seed("dhcp", name);
            let arrival = broadcast_arrival(&datagram);
            let mut leases = Leases::from_stored(stored_leases());
            let rx = received(&datagram, &arrival, &br0, Port::Dhcp);
            let a = answer(&full, &mut leases, rx);
            let Outcome::Reply(reply) = &a.outcome else {
                panic!("{name}: no reply: {a:?}")
            };
            let m = Message::from_bytes(&reply.out.bytes).unwrap();
            match m.opts().get(OptionCode::BootfileName) {
                Some(DhcpOption::BootfileName(f)) => String::from_utf8_lossy(f).into_owned(),
                other => panic!("{name}: {other:?}"),
            }
        };
        assert_eq!(
            bootfile("bios-rom-01-discover"),
            "http://10.97.0.1:8080/boot.ipxe"
        );
        assert_eq!(bootfile("pxe-rom-discover"), "undionly.kpxe");
        assert_eq!(bootfile("pxe-efi-discover"), "snponly.efi");

        let oack = runtime()
            .block_on(crate::tftp::first_packet(
                &full,
                &seed("tftp", "client-rrq-02-undionly.kpxe"),
            ))
            .unwrap();
        assert_eq!(&oack[..2], &[0, 6], "{oack:?}");
        assert!(oack.windows(10).any(|w| w == b"tsize\x003000"), "{oack:?}");

        let response = runtime().block_on(serve_bytes(full.clone(), &seed("http", "ipxe-bios-03")));
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("-> rule by-serial"), "{text}");
    }

    #[test]
    fn dhcp_corpus_replays() {
        assert!(replay("dhcp", dhcp) > 0, "no DHCP seeds");
    }

    #[test]
    fn dhcp6_corpus_replays() {
        assert!(replay("dhcp6", dhcp6) > 0, "no DHCPv6 seeds");
    }

    #[test]
    fn tftp_corpus_replays() {
        assert!(replay("tftp", tftp) > 0, "no TFTP seeds");
    }

    #[test]
    fn http_corpus_replays() {
        assert!(replay("http", http) > 0, "no HTTP seeds");
    }

    #[test]
    fn config_corpus_replays() {
        assert!(replay("config", config) > 0, "no config seeds");
    }
}
