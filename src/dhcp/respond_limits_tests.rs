//! The DHCP exchange's limits and malformed input, with the helpers of
//! `respond_tests.rs`.

use super::*;

/// Packets stopped before the exchange: malformed, over a rate, and the
/// per-MAC and pool limits.
#[test]
fn limits_and_malformed() {
    let config = full_config();
    let br0 = br0();
    let send = |leases: &mut Leases, guard: &mut Guard, bytes: &[u8]| {
        let arrival = crate::fuzzing::broadcast_arrival(bytes);
        let rx = crate::fuzzing::received(bytes, &arrival, &br0, Port::Dhcp);
        let clock = Clock {
            unix: NOW,
            instant: std::time::Instant::now(),
        };
        respond(&config, leases, guard, rx, clock).outcome
    };
    let mut leases = Leases::default();
    let mut guard = Guard::new(1024);
    let good = pkt(MessageType::Discover, NEW).bytes();
    for bad in [&good[..100], &[2u8; 300][..], &good[..240]] {
        assert!(matches!(
            send(&mut leases, &mut guard, bad),
            Outcome::Malformed(_)
        ));
    }
    // Over the per-MAC rate: the default is 10/s with bursts of 20.
    let mut limited = None;
    for _ in 0..40 {
        if let Outcome::Limited(l, _) = send(&mut leases, &mut guard, &good) {
            limited = Some(l.label());
            break;
        }
    }
    assert_eq!(limited, Some("rate_mac"));
    // One MAC under many client ids: max_leases_per_mac (4) addresses.
    let mut leases = Leases::default();
    let mut outcomes = Vec::new();
    for id in 0..6u8 {
        let mut m = Message::from_bytes(&pkt(MessageType::Discover, NEW).bytes()).unwrap();
        m.opts_mut()
            .insert(DhcpOption::ClientIdentifier(vec![0xff, id]));
        let bytes = m.to_vec().unwrap();
        let outcome = send(&mut leases, &mut Guard::new(1024), &bytes);
        outcomes.push(match outcome {
            Outcome::Reply(_) => "offer",
            Outcome::Limited(l, _) => l.label(),
            _ => "other",
        });
    }
    assert_eq!(
        outcomes,
        [
            "offer",
            "offer",
            "offer",
            "offer",
            "mac_leases",
            "mac_leases"
        ]
    );
    // The 11 addresses of 10.98.0.100-110 through a relay: then the pool is exhausted.
    let mut leases = Leases::default();
    let mut last = None;
    for n in 0..12u8 {
        let p = Pkt {
            giaddr: ip(10, 98, 0, 1),
            ..pkt(MessageType::Discover, [0x52, 0x54, 1, 0, 0, n])
        };
        let bytes = p.bytes();
        let arrival = Arrival {
            src: SocketAddrV4::new(ip(10, 98, 0, 1), 67),
            local: SERVER,
            ..crate::fuzzing::broadcast_arrival(&bytes)
        };
        let rx = crate::fuzzing::received(&bytes, &arrival, &br0, Port::Dhcp);
        last = Some(answer(&config, &mut leases, rx).outcome);
    }
    assert!(
        matches!(last, Some(Outcome::Limited(super::Limit::PoolExhausted, _))),
        "{last:?}"
    );
}
