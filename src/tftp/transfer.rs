//! One read transfer on its own socket (a fresh ephemeral port, the server's
//! TID per RFC 1350, connected to the client's): the OACK handshake, then DATA
//! in windows of `windowsize` blocks sent back to back (RFC 7440; lockstep is a
//! window of 1), retransmission on timeout with a bounded budget, and an
//! immediate end when the client sends ERROR (the PXE ROM's "ERROR 8 after the
//! OACK" is the common case) or its port is closed.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::{Instant, Sleep};

use super::batch;
use super::content::Content;
use super::packet::{self, Accepted, Packet};

/// The negotiated parameters of one transfer.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// Retransmissions of the same packet(s) before the client is declared gone.
    pub retries: u32,
    /// `Some` when options were acknowledged: send this OACK and wait for ACK 0.
    pub oack: Option<Accepted>,
}

/// How a transfer ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every block acknowledged.
    Complete,
    /// The client sent ERROR (e.g. code 8 after the OACK: a PXE ROM that only
    /// wanted `tsize`).
    ClientError { code: u16, message: String },
    /// No acknowledgement within the retry budget.
    TimedOut,
    /// The client's port is closed (ICMP port unreachable).
    ClientGone,
    /// A local I/O error (reading the file, the socket).
    Failed(io::Error),
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientError { .. } => "aborted by client",
            Outcome::TimedOut => "timed out",
            Outcome::ClientGone => "client gone",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The outcome label of the `pxed_requests` metric.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Complete => "ok",
            Outcome::ClientError { .. } => "aborted",
            Outcome::TimedOut => "timed_out",
            Outcome::ClientGone => "client_gone",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// What the client said, or that it said nothing in time.
enum Heard {
    Ack(u16),
    Error { code: u16, message: String },
    Timeout,
}

/// The transfer's ear: waits for the client's ACK or ERROR until a deadline.
/// One timer serves the whole transfer: moving its deadline later is an
/// atomic store, where a fresh timer per block cost a timer-wheel insert and
/// removal per block.
struct Ear<'a> {
    socket: &'a UdpSocket,
    buf: Vec<u8>,
    timer: Pin<Box<Sleep>>,
}

impl<'a> Ear<'a> {
    fn new(socket: &'a UdpSocket, blksize: u16) -> Self {
        Ear {
            socket,
            buf: vec![0u8; 516.max(usize::from(blksize) + 4)],
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }

    /// Forgets that the socket was readable, so that the next wait goes
    /// straight to epoll instead of first trying a `recv` that finds nothing:
    /// one syscall less per block in lockstep. Called only between the ACK of
    /// the last block sent and the next send: the client has nothing more to
    /// say until it gets that block, and a stray datagram left queued is read
    /// when the next one arrives.
    fn forget_readiness(&self) {
        let _ = self.socket.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }

    /// Waits for an ACK or ERROR until `deadline`; everything else (garbage,
    /// DATA, requests) is counted and ignored without moving the deadline.
    async fn hear(&mut self, deadline: Instant) -> io::Result<Heard> {
        self.timer.as_mut().reset(deadline);
        loop {
            let n = tokio::select! {
                biased;
                r = self.socket.recv(&mut self.buf) => r?,
                () = &mut self.timer => return Ok(Heard::Timeout),
            };
            match packet::parse(&self.buf[..n]) {
                Ok(Packet::Ack(block)) => return Ok(Heard::Ack(block)),
                Ok(Packet::Error { code, message }) => return Ok(Heard::Error { code, message }),
                Ok(_) | Err(_) => super::count_malformed(),
            }
        }
    }
}

fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// Runs the transfer to its end; returns the outcome and the payload bytes the
/// client acknowledged.
pub async fn run(socket: &UdpSocket, content: &Content, params: Params) -> (Outcome, u64) {
    match send(socket, content, params).await {
        Ok(r) => r,
        Err(e) if gone(&e) => (Outcome::ClientGone, 0),
        Err(e) => {
            // Tell the client, so that it does not wait out its retries for
            // blocks that will never come.
            let _ = socket
                .send(&packet::error(packet::ErrorCode::Undefined, &e.to_string()))
                .await;
            (Outcome::Failed(e), 0)
        }
    }
}

async fn send(socket: &UdpSocket, content: &Content, p: Params) -> io::Result<(Outcome, u64)> {
    let bs = u64::from(p.blksize);
    let len = content.len();
    // The last block is shorter than blksize, possibly empty.
    let total = len / bs + 1;
    let mut ear = Ear::new(socket, p.blksize);
    let acked_bytes = |acked: u64| (acked * bs).min(len);
    let mut blocks = content.blocks();

    if let Some(oack) = p.oack {
        let oack = oack.oack();
        let mut tries = 0;
        'oack: loop {
            if let Err(e) = socket.send(&oack).await {
                if gone(&e) {
                    return Ok((Outcome::ClientGone, 0));
                }
            }
            let deadline = Instant::now() + p.timeout;
            loop {
                match ear.hear(deadline).await? {
                    Heard::Ack(0) => break 'oack,
                    Heard::Ack(_) => {}
                    Heard::Error { code, message } => {
                        return Ok((Outcome::ClientError { code, message }, 0))
                    }
                    Heard::Timeout => {
                        tries += 1;
                        if tries > p.retries {
                            return Ok((Outcome::TimedOut, 0));
                        }
                        continue 'oack;
                    }
                }
            }
        }
    }

    let window = u64::from(p.windowsize.max(1));
    let segment = usize::from(p.blksize) + 4;
    // The packets due now, back to back, sent with one syscall (batch.rs).
    let mut packets = Vec::with_capacity(segment * usize::from(p.windowsize.max(1)));
    // Blocks 1..=acked are acknowledged; `next` is the next block to send.
    let mut acked: u64 = 0;
    let mut next: u64 = 1;
    let mut tries = 0;
    let mut fast_resent = None;
    loop {
        packets.clear();
        let mut due = next;
        while due <= total && due <= acked + window {
            let start = packets.len();
            packet::data_header(&mut packets, due as u16);
            blocks.read((due - 1) * bs, usize::from(p.blksize), &mut packets)?;
            due += 1;
            if packets.len() - start < segment {
                // A short block is the last one the client takes (a file
                // that shrank mid-transfer ends early), and GSO needs every
                // packet but the last to be full.
                break;
            }
        }
        let (sent, err) = if packets.len() <= segment {
            // Lockstep and the storm: one packet, a plain `send`.
            if acked + 1 == next && tries == 0 {
                ear.forget_readiness();
            }
            match socket.send(&packets).await {
                Ok(_) => (1, None),
                Err(e) => (0, Some(e)),
            }
        } else {
            let window = batch::Packets {
                buf: &packets,
                segment,
            };
            batch::send(socket, window).await
        };
        next += sent as u64;
        if let Some(e) = err {
            if gone(&e) {
                return Ok((Outcome::ClientGone, acked_bytes(acked)));
            }
            // ENOBUFS and the like: the unsent packets are lost, recovered by
            // timeout.
        }
        let deadline = Instant::now() + p.timeout;
        loop {
            match ear.hear(deadline).await? {
                Heard::Ack(block) => {
                    // Block numbers wrap at 65535 (to 0, as tftp-hpa does):
                    // map the 16-bit number into the unacknowledged range.
                    let ahead = u64::from(block.wrapping_sub(acked as u16));
                    if ahead == 0 && next > acked + 1 && fast_resent != Some(acked) {
                        // The client repeats its last in-order ACK while blocks
                        // are outstanding: it lost the next one. Resend the
                        // window from there, once per ACK value.
                        fast_resent = Some(acked);
                        next = acked + 1;
                        break;
                    }
                    if ahead == 0 || acked + ahead >= next {
                        // A duplicate or stale ACK: in lockstep never resend on
                        // it (Sorcerer's Apprentice), wait for the timeout.
                        continue;
                    }
                    acked += ahead;
                    tries = 0;
                    if acked == total {
                        return Ok((Outcome::Complete, len));
                    }
                    // An ACK short of the window's end slides the window; the
                    // blocks after it are still in flight (clients that ACK
                    // every block) or lost (then the client repeats this ACK).
                    break;
                }
                Heard::Error { code, message } => {
                    return Ok((Outcome::ClientError { code, message }, acked_bytes(acked)))
                }
                Heard::Timeout => {
                    tries += 1;
                    if tries > p.retries {
                        return Ok((Outcome::TimedOut, acked_bytes(acked)));
                    }
                    next = acked + 1;
                    break;
                }
            }
        }
    }
}
