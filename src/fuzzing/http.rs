//! Target `http`: bytes on a connection to the real router, and the
//! structure of what the first request renders.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{full_config, runtime, structure};
use crate::config::Config;
use crate::core::identity::MenuRequest;
use crate::core::{Base, Boot, ClientString, Identity, Rule};

/// Target `http`: bytes as a client sends them on a connection to the HTTP
/// listener (request line, headers, pipelined requests), served by the real
/// router on hyper from memory. Then the query of the first request line
/// goes through identity → rule → render, and the script or menu must have
/// the structure of the same rule rendered for a harmless machine.
pub fn http(bytes: &[u8]) {
    let config = full_config();
    let response = runtime().block_on(serve_bytes(config.clone(), bytes));
    if !response.is_empty() {
        assert!(
            response.starts_with(b"HTTP/1."),
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&response[..response.len().min(64)])
        );
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let target = line.split(' ').nth(1).unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let base = Base::Http("http://10.97.0.1:8080".into());
    if path == "/ipxe" {
        script_keeps_its_structure(&config, query, &base);
    } else if let Some(name) = path.strip_prefix("/pxelinux/pxelinux.cfg/") {
        menu_keeps_its_structure(&config, name, query, &base);
    }
}

pub(crate) async fn serve_bytes(config: Arc<Config>, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shared = Arc::new(arc_swap::ArcSwap::new(config));
    let app = crate::http::router(shared);
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let conn = crate::http::Conn {
        local: SocketAddr::from(([10, 97, 0, 1], 8080)),
        peer: SocketAddr::from(([10, 97, 1, 10], 40000)),
    };
    let talk = async move {
        let _ = client.write_all(bytes).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        out
    };
    let ((), out) = tokio::join!(crate::http::connection(server, conn, app), talk);
    out
}

/// The identity with every client string replaced by a harmless one (same
/// presence, so templates take the same branches).
fn harmless(id: &Identity) -> Identity {
    let plain = |s: &Option<ClientString>| s.as_ref().and_then(|_| ClientString::new("plain"));
    Identity {
        product: plain(&id.product),
        serial: plain(&id.serial),
        manufacturer: plain(&id.manufacturer),
        ..id.clone()
    }
}

fn assert_same_shape(got: &str, want: &str, what: &str) {
    assert_eq!(
        structure(got),
        structure(want),
        "{what}: client values changed the structure:\n{got}"
    );
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "{what}: client values added lines:\n{got}"
    );
}

fn script_keeps_its_structure(config: &Config, query: &str, base: &Base) {
    let Ok(id) = Identity::from_query(query) else {
        return;
    };
    let got = config.policy.ipxe_script(&id, base);
    let rule = config
        .policy
        .select(&id)
        .expect("the fixture has a catch-all rule");
    let want = expected(config, rule, rule.boot.ipxe_template(id.arch), &id, base);
    assert_same_shape(&got.text, &want, "iPXE script");
}

fn menu_keeps_its_structure(config: &Config, name: &str, query: &str, base: &Base) {
    let Some(MenuRequest { id, rule_hint, .. }) = MenuRequest::parse(name, query) else {
        return;
    };
    let Some(got) = config
        .policy
        .pxelinux_config(&id, base, rule_hint.as_deref())
    else {
        return;
    };
    let rule = config
        .policy
        .rules
        .iter()
        .find(|r| Some(&r.name) == got.rule.as_ref())
        .expect("a rendered menu names its rule");
    let want = expected(config, rule, &rule.boot.menu_template, &id, base);
    assert_same_shape(&got.text, &want, "pxelinux menu");
}

/// `template` of `rule` rendered for a harmless copy of `id`.
fn expected(
    config: &Config,
    rule: &Rule<Boot>,
    template: &str,
    id: &Identity,
    base: &Base,
) -> String {
    let none = Default::default();
    (config.policy)
        .render_rule_checked(rule, template, &harmless(id), base, &none)
        .expect("the fixture's templates render")
}
