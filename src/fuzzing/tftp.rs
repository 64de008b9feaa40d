//! Target `tftp`: the first packet pxed sends in answer to one datagram.

use super::{full_config, runtime};

/// Target `tftp`: one datagram on the TFTP listener; the first packet pxed
/// would send back must be well-formed, within the negotiated limits, and
/// never come from outside the asset root (or a file `[server.files]`
/// names).
pub fn tftp(datagram: &[u8]) {
    let config = full_config();
    let reply = runtime().block_on(crate::tftp::first_packet(&config, datagram));
    let request = match crate::tftp::packet::parse(datagram) {
        Ok(crate::tftp::packet::Packet::Rrq(r)) => r,
        _ => {
            if let Some(r) = &reply {
                assert_eq!(r.get(..2), Some(&[0, 5][..]), "only an ERROR for a non-RRQ");
            }
            return;
        }
    };
    let reply = reply.expect("an RRQ always gets an answer");
    let opcode = u16::from_be_bytes([reply[0], reply[1]]);
    let name = request.filename.trim_start_matches('/');
    match opcode {
        5 => return,
        3 | 6 => {}
        other => panic!("first packet with opcode {other}"),
    }
    if let Ok(path) = crate::assets::resolve(config.server.asset_roots(), name) {
        let root = config
            .server
            .assets_dir
            .canonicalize()
            .expect("the fixture asset root");
        // Or a file `[server.files]` names (Debian's signed shim and GRUB).
        let named = config
            .server
            .files
            .values()
            .any(|f| f.canonicalize().is_ok_and(|f| f == path));
        assert!(path.starts_with(&root) || named, "{name:?} served {path:?}");
    }
    if opcode == 6 {
        let text = &reply[2..];
        let fields: Vec<&[u8]> = text.split(|&b| b == 0).collect();
        for pair in fields
            .chunks(2)
            .filter(|p| p.len() == 2 && !p[0].is_empty())
        {
            let value: u64 = std::str::from_utf8(pair[1])
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("OACK values are numbers");
            match pair[0] {
                b"blksize" => {
                    assert!((8..=u64::from(crate::tftp::MAX_BLKSIZE)).contains(&value))
                }
                b"windowsize" => {
                    assert!((1..=u64::from(crate::tftp::MAX_WINDOWSIZE)).contains(&value))
                }
                b"timeout" => assert!((1..=255).contains(&value)),
                b"tsize" => {}
                other => panic!("OACK names an option nobody asked for: {other:?}"),
            }
        }
    }
}
