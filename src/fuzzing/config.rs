//! Target `config`: bytes as `machines.toml`.

use super::{fixture_dir, templates};
use crate::config::{self as cfg, TemplateFiles};
use crate::core::{Base, Identity};

/// Target `config`: bytes as `machines.toml` (the shipped templates fixed):
/// either a config in which every rule renders, or errors that each point at
/// a line of the file.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = fixture_dir().join("machines.toml");
    match cfg::load_text(&path, text, TemplateFiles::Given(templates())) {
        Ok(c) => {
            // Whatever the rules' globs, matching a machine terminates and
            // renders.
            let base = Base::Http("http://10.97.0.1:8080".into());
            for query in [
                "mac=52:54:00:12:34:56&product=Express5800%2Fi120Ra-e1&serial=SN-42-1",
                "mac=52-54-00-00-00-aa&manufacturer=NEC&platform=efi&buildarch=x86_64",
            ] {
                let id = Identity::from_query(query).expect("a well-formed query");
                let _ = c.policy.ipxe_script(&id, &base);
                let _ = c.policy.pxelinux_config(&id, &base, None);
                let _ = c.policy.rules.explain(&id);
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "rejected without a reason");
            let lines = text.lines().count().max(1) + 1;
            for e in &errors.0 {
                if *e.location.file == *path.display().to_string() {
                    assert!(
                        e.location.line >= 1 && e.location.line <= lines,
                        "{e} points past the end ({lines} lines)"
                    );
                }
                assert!(!e.reason.is_empty());
            }
        }
    }
}
