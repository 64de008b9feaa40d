//! DHCPv6 client messages as the firmware, iPXE and relays send them (BRIEF
//! "IPv6 netboot"): for the unit tests, the fuzz target's seeds and the
//! integration tests (`tests/common/dhcp6.rs`). Nothing in the daemon uses it.

use std::net::Ipv6Addr;

use dhcproto::v6::MessageType;

use super::options::{code, put};
use super::reply::Writer;

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x60];

/// fe80:: + the EUI-64 of `mac` (what OVMF and iPXE send from).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// DUID-LLT (type 1, Ethernet, a time) of `mac`.
pub fn duid_llt(mac: [u8; 6]) -> Vec<u8> {
    [&[0, 1, 0, 1, 0x2e, 0x5b, 0x1c, 0x00][..], &mac].concat()
}

/// DUID-UUID (type 4) of all zeros: iPXE without an SMBIOS UUID.
pub fn duid_zero_uuid() -> Vec<u8> {
    [&[0, 4][..], &[0; 16]].concat()
}

/// An IA_NA option value: IAID, T1 = T2 = 0, the addresses named.
pub fn ia_na(iaid: u32, addrs: &[Ipv6Addr]) -> Vec<u8> {
    let mut v = iaid.to_be_bytes().to_vec();
    v.extend_from_slice(&[0; 8]);
    for a in addrs {
        let mut ia = a.octets().to_vec();
        ia.extend_from_slice(&[0; 8]);
        put(&mut v, code::IA_ADDR, &ia);
    }
    v
}

/// A class option value (user class: no enterprise; vendor class: 343).
pub fn class(enterprise: Option<u32>, item: &[u8]) -> Vec<u8> {
    let mut v = enterprise
        .map(|e| e.to_be_bytes().to_vec())
        .unwrap_or_default();
    v.extend_from_slice(&u16::try_from(item.len()).unwrap_or(0).to_be_bytes());
    v.extend_from_slice(item);
    v
}

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// OVMF's PXEv6 (arch 7, `PXEClient`, DUID-LLT, no user class).
    Firmware,
    /// OVMF's HTTP Boot (arch 16, `HTTPClient`).
    HttpBoot,
    /// iPXE (user class `iPXE`, DUID-UUID of zeros).
    Ipxe,
    /// An operating system's client: no arch, no class.
    Os,
}

/// A client message of `kind` from `sender` with `mac`, `extra` options
/// appended (server id, IA_NA, rapid commit, ...).
pub fn message(
    kind: MessageType,
    sender: Sender,
    mac: [u8; 6],
    extra: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let mut w = Writer::new(kind, [0x0a, 0x0b, 0x0c]);
    let duid = match sender {
        Sender::Ipxe => duid_zero_uuid(),
        _ => duid_llt(mac),
    };
    w.option(code::CLIENT_ID, &duid)
        .option(code::ELAPSED_TIME, &[0, 0])
        .option(code::ORO, &[0, 59, 0, 60, 0, 23, 0, 16]);
    match sender {
        Sender::Firmware => {
            w.option(code::CLIENT_ARCH, &[0, 7])
                .option(
                    code::VENDOR_CLASS,
                    &class(Some(343), b"PXEClient:Arch:00007:UNDI:003000"),
                )
                .option(code::NII, &[1, 3, 0]);
        }
        Sender::HttpBoot => {
            w.option(code::CLIENT_ARCH, &[0, 16]).option(
                code::VENDOR_CLASS,
                &class(Some(343), b"HTTPClient:Arch:00016:UNDI:003000"),
            );
        }
        Sender::Ipxe => {
            w.option(code::CLIENT_ARCH, &[0, 7])
                .option(code::USER_CLASS, &class(None, b"iPXE"))
                .option(
                    code::VENDOR_CLASS,
                    &class(Some(343), b"PXEClient:Arch:00007:UNDI:003010"),
                );
        }
        Sender::Os => {}
    }
    for (c, v) in extra {
        w.option(*c, v);
    }
    w.finish(&[])
}

/// `inner` in a Relay-Forward (hop count 0) with `extra` relay options.
pub fn relay_forw(
    inner: &[u8],
    link: Ipv6Addr,
    peer: Ipv6Addr,
    extra: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let mut out = vec![12, 0];
    out.extend_from_slice(&link.octets());
    out.extend_from_slice(&peer.octets());
    for (c, v) in extra {
        put(&mut out, *c, v);
    }
    put(&mut out, code::RELAY_MSG, inner);
    out
}
