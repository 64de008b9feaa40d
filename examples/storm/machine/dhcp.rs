//! The DHCP side of simulated machines: one socket on port 68 for all of them
//! (as on a real segment, every reply is a broadcast every client hears), a
//! reader task that hands each reply to the machine waiting for its xid, and
//! DISCOVER/OFFER/REQUEST/ACK with the retries and doubling timeouts of a
//! firmware client.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::wire;

/// Who is asking: a PXE ROM (BIOS, arch 0) or iPXE chainloaded by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    PxeRom,
    Ipxe,
}

/// What an ACK handed out.
#[derive(Debug, Clone)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// siaddr: where the boot file is.
    pub next_server: Ipv4Addr,
    /// Option 67, else the `file` field.
    pub boot_file: String,
}

/// The longest wait for one answer (iPXE stops doubling at 10 s).
const MAX_WAIT: Duration = Duration::from_secs(8);

type Waiters = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Message>>>>;

/// The shared port-68 socket and its reply dispatcher.
pub struct Dhcp {
    socket: Arc<UdpSocket>,
    waiters: Waiters,
}

impl Dhcp {
    /// Binds 0.0.0.0:68 on `interface` (broadcasts leave and arrive there).
    pub fn bind(interface: &str) -> std::io::Result<Dhcp> {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        // Thousands of OFFERs and ACKs arrive in bursts.
        let _ = s.set_recv_buffer_size(8 << 20);
        s.bind_device(Some(interface.as_bytes()))?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], 68)).into())?;
        s.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(s.into())?);
        let waiters: Waiters = Arc::default();
        tokio::spawn(dispatch(socket.clone(), waiters.clone()));
        Ok(Dhcp { socket, waiters })
    }

    /// DISCOVER → OFFER → REQUEST → ACK, starting over on a NAK or silence,
    /// `tries` times at most; each wait doubles from `timeout` up to 8 s.
    pub async fn dora(
        &self,
        mac: [u8; 6],
        firmware: Firmware,
        xid: u32,
        timeout: Duration,
        tries: u32,
    ) -> Result<Lease, String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.waiters.lock().unwrap().insert(xid, tx);
        let result = self
            .exchange(mac, firmware, xid, timeout, tries, &mut rx)
            .await;
        self.waiters.lock().unwrap().remove(&xid);
        result
    }

    async fn exchange(
        &self,
        mac: [u8; 6],
        firmware: Firmware,
        xid: u32,
        timeout: Duration,
        tries: u32,
        rx: &mut mpsc::UnboundedReceiver<Message>,
    ) -> Result<Lease, String> {
        let mut last = String::from("no answer");
        let mut wait = timeout;
        for _ in 0..tries {
            let discover = message(MessageType::Discover, mac, firmware, xid, vec![]);
            let Some(offer) = self.ask(&discover, MessageType::Offer, wait, rx).await else {
                last = format!("no OFFER within {wait:?}");
                wait = (wait * 2).min(MAX_WAIT);
                continue;
            };
            let server = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => return Err("OFFER without a server identifier".into()),
            };
            let request = message(
                MessageType::Request,
                mac,
                firmware,
                xid,
                vec![
                    DhcpOption::RequestedIpAddress(offer.yiaddr()),
                    DhcpOption::ServerIdentifier(server),
                ],
            );
            match self.ask(&request, MessageType::Ack, wait, rx).await {
                Some(ack) => return Ok(lease(&ack)),
                None => {
                    last = format!("no ACK within {wait:?} (or a NAK)");
                    wait = (wait * 2).min(MAX_WAIT);
                }
            }
        }
        Err(last)
    }

    /// Sends `m` and waits for a reply of type `want` (a NAK ends the wait).
    async fn ask(
        &self,
        m: &Message,
        want: MessageType,
        wait: Duration,
        rx: &mut mpsc::UnboundedReceiver<Message>,
    ) -> Option<Message> {
        let bytes = m.to_vec().ok()?;
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        if self.socket.send_to(&bytes, to).await.is_err() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let reply = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
            match reply.opts().msg_type() {
                Some(t) if t == want => return Some(reply),
                Some(MessageType::Nak) => return None,
                // A late answer to an earlier attempt.
                _ => continue,
            }
        }
    }
}

async fn dispatch(socket: Arc<UdpSocket>, waiters: Waiters) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(m) = Message::from_bytes(&buf[..n]) else {
            continue;
        };
        let waiter = waiters.lock().unwrap().get(&m.xid()).cloned();
        if let Some(w) = waiter {
            let _ = w.send(m);
        }
    }
}

/// A client message with what the firmware really sends: the broadcast flag,
/// option 93 arch 0,
/// 94 (UNDI 2.1), 97 (GUID), 60 `PXEClient:Arch:00000:UNDI:002001`, a
/// parameter request list, and for iPXE user class `iPXE` (raw, as iPXE sends it).
fn message(
    kind: MessageType,
    mac: [u8; 6],
    firmware: Firmware,
    xid: u32,
    extra: Vec<DhcpOption>,
) -> Message {
    let mut m = wire::message(kind, mac, extra);
    m.set_xid(xid);
    // iPXE and PXE ROMs set the broadcast flag: they cannot take a unicast
    // before they have an address.
    m.set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MaxMessageSize(1260));
    o.insert(wire::pxe_class());
    o.insert(wire::arch(0));
    o.insert(wire::raw(94, vec![1, 2, 1]));
    let mut guid = vec![0];
    guid.extend_from_slice(&[0x11; 10]);
    guid.extend_from_slice(&mac);
    o.insert(DhcpOption::ClientMachineIdentifier(guid));
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::BootfileName,
        OptionCode::TFTPServerName,
        OptionCode::VendorExtensions,
    ]));
    if firmware == Firmware::Ipxe {
        o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    m
}

fn lease(ack: &Message) -> Lease {
    Lease {
        ip: ack.yiaddr(),
        next_server: ack.siaddr(),
        boot_file: wire::boot_file(ack),
    }
}
