//! GRUB's configs over TFTP (`boot = "grub"`, see `core::grub`): the fixed
//! `grub/grub.cfg` every machine asks for, and `grub/pxed/<mac>/<cpu>.cfg`,
//! rendered by the core from the machine's rule and override.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::content::Content;
use super::Refusal;
use crate::config::Config;
use crate::core::grub::{Request, BOOTSTRAP};
use crate::core::{Base, Identity};
use crate::events::{self, Event, Stage};

/// Who asked, as far as a rendered config needs it: the listener's address
/// and the client's (`None` for the fuzz target).
#[derive(Debug, Clone, Copy)]
pub(super) struct Asker {
    pub local_ip: IpAddr,
    pub peer: SocketAddr,
}

/// The content of a GRUB config request.
pub(super) async fn open(
    config: &Config,
    request: Request,
    asker: Option<Asker>,
) -> Result<Content, Refusal> {
    let id = match request {
        Request::Bootstrap => return Ok(Content::Memory(Arc::from(BOOTSTRAP.as_bytes()))),
        Request::Invalid => return Err(Refusal::NotFound("not a per-machine GRUB config name")),
        Request::Machine(id) => id,
    };
    let Some(mac) = id.mac else {
        return Err(Refusal::NotFound("not a per-machine GRUB config name"));
    };
    let base = asker.and_then(|a| http_base(config, a));
    // With an HTTP base, a one-shot override gets this boot's callback URL
    // (the installer calls it over HTTP); without one it boots its rule
    // uncounted, as a classic pxelinux machine over TFTP does (docs/api.md).
    let (active, base) = match base {
        Some(base) => match crate::machines::for_boot(mac).await {
            Ok(active) => (active, base),
            Err(why) => {
                record(&id, asker, "failed", format!("grub.cfg: {why}"), None);
                return Ok(text(config.policy.grub_retry(&why).text));
            }
        },
        None => (
            crate::machines::lookup(mac).map(|a| crate::core::Active { token: None, ..a }),
            Base::Tftp,
        ),
    };
    let rendered = config.policy.grub_for(&id, &base, active.as_ref());
    let rule = rendered.rule.as_deref();
    let (outcome, detail) = match rule {
        Some(_) => ("ok", "grub.cfg"),
        None => (
            "no_rule",
            "no rule matches: grub.cfg that restarts the machine",
        ),
    };
    tracing::info!(mac = %mac, arch = ?id.arch.map(|a| a.name()), rule, "grub config rendered");
    record(&id, asker, outcome, detail.to_string(), rule);
    Ok(text(rendered.text))
}

fn text(s: String) -> Content {
    Content::Memory(Arc::from(s.into_bytes()))
}

/// Where the machine reaches pxed's HTTP server: `public_url`, else the
/// HTTP port on the address it reached TFTP at (on a wildcard listener, the
/// address the kernel routes replies to it from).
pub(super) fn http_base(config: &Config, asker: Asker) -> Option<Base> {
    if let Some(base) = &config.server.public_url {
        return Some(base.clone());
    }
    let ip = match asker.local_ip {
        ip if !ip.is_unspecified() => ip,
        _ => route_source(asker.peer)?,
    };
    // A dual-stack listener's IPv4 clients: an IPv4 URL, not `[::ffff:…]`.
    Some(config.server.base_at(ip.to_canonical()))
}

/// The source address the kernel picks to reach `peer` (no packet sent).
fn route_source(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The menu step of the machine's boot (the TFTP transfer records its own).
fn record(
    id: &Identity,
    asker: Option<Asker>,
    outcome: &'static str,
    detail: String,
    rule: Option<&str>,
) {
    events::record_with(|| {
        Event::new(Stage::Menu, outcome, detail)
            .mac(id.mac)
            .ip(asker.map(|a| a.peer.ip()))
            .rule(rule)
            .arch(id.arch)
    });
}
