//! The two hot paths, in one process and without sockets, for
//! `bench/callgrind.sh`: instruction counts under `valgrind --tool=callgrind`
//! do not depend on the machine's load, so they compare builds on a shared
//! host where wall-clock benches cannot. Not part of the pxed binary.
//!
//! cargo run --release --example callgrind -- dhcp N    # N DORA exchanges (new MAC each) through dhcp::respond
//! cargo run --release --example callgrind -- http N    # N /ipxe renders through the HTTP router (new MAC each)
//! cargo run --release --example callgrind -- cached N  # N /ipxe requests for one machine (the render cache)
//!
//! Runs against `fuzz/fixture/machines.toml` (full DHCP on 10.97.0.0/16).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder};
use tower::ServiceExt;

use pxed::config::{self, Config};
use pxed::dhcp::exchange::Port;
use pxed::dhcp::guard::Guard;
use pxed::dhcp::leases::Leases;
use pxed::dhcp::server::{Arrival, Iface};
use pxed::dhcp::{respond, Clock, Outcome, Received};

const NOW: u64 = 1_800_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_default();
    let n: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixture/machines.toml");
    let config = config::load(&fixture).unwrap_or_else(|e| panic!("{e}"));
    match what.as_str() {
        "dhcp" => dhcp(&config, n),
        "http" => http(config, n, false),
        "cached" => http(config, n, true),
        _ => eprintln!("usage: callgrind dhcp|http|cached N"),
    }
}

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0xbe, b[0], b[1], b[2], b[3]]
}

fn packet(i: u32, kind: MessageType, offered: Option<Ipv4Addr>) -> Vec<u8> {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new(u, u, u, u, &mac(i));
    m.set_xid(i);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    o.insert(DhcpOption::Unknown(UnknownOption::new(
        OptionCode::ClientSystemArchitecture,
        vec![0, 0],
    )));
    if let Some(ip) = offered {
        o.insert(DhcpOption::RequestedIpAddress(ip));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 97, 0, 1)));
    }
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).expect("encodes");
    buf
}

fn dhcp(config: &Config, n: u32) {
    let iface = Iface {
        name: "br0".into(),
        addrs: vec![(Ipv4Addr::new(10, 97, 0, 1), 16)],
        addrs6: vec![],
    };
    let mut leases = Leases::default();
    let mut guard = Guard::new(65_536);
    let mut acks = 0;
    for i in 0..n {
        let mut offered = None;
        for kind in [MessageType::Discover, MessageType::Request] {
            let datagram = packet(i, kind, offered);
            let arrival = Arrival {
                len: datagram.len(),
                src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                ifindex: 2,
                local: Ipv4Addr::BROADCAST,
                truncated: false,
            };
            let rx = Received {
                datagram: &datagram,
                arrival: &arrival,
                iface: Some(&iface),
                port: Port::Dhcp,
            };
            let clock = Clock {
                unix: NOW,
                instant: Instant::now(),
            };
            match respond(config, &mut leases, &mut guard, rx, clock).outcome {
                Outcome::Reply(reply) => {
                    offered = Some(reply.yiaddr);
                    acks += usize::from(kind == MessageType::Request);
                }
                other => panic!("DORA {i} {kind:?}: {other:?}"),
            }
        }
    }
    println!("{acks} DORA exchanges");
}

fn http(config: Arc<Config>, n: u32, cached: bool) {
    let shared: config::Shared = Arc::new(arc_swap::ArcSwap::new(config));
    let app = pxed::http::router(shared);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut bytes = 0;
    for i in 0..n {
        let m = mac(if cached { 0 } else { i });
        let uri = format!(
            "/ipxe?product=Express5800%2Fi120Ra-e1&mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}&platform=pcbios&buildarch=i386",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
        let req = axum::http::Request::builder()
            .uri(uri)
            .header("host", "10.97.0.1:8080")
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = rt.block_on(app.clone().oneshot(req)).expect("infallible");
        assert!(resp.status().is_success());
        let body = rt
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
            .expect("body");
        bytes += body.len();
    }
    println!("{n} renders, {bytes} bytes");
}
