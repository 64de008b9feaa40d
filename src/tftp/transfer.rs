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
use super::content::{Blocks, Content};
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
    /// The outcome's one name: the `outcome` label of `pxed_requests_total`,
    /// the `outcome` field of the `tftp transfer` log line and the boot
    /// event's outcome.
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

/// The first packet of a transfer: the OACK when options were acknowledged,
/// else DATA block 1, built by the same pieces `send` uses (for the fuzz
/// target and tests).
#[cfg(any(test, fuzzing))]
pub fn first_packet(content: &Content, p: &Params) -> io::Result<Vec<u8>> {
    match p.oack {
        Some(oack) => Ok(oack.oack()),
        None => {
            let mut w = Window::new(content, p);
            w.fill()?;
            Ok(w.packets)
        }
    }
}

async fn send(socket: &UdpSocket, content: &Content, p: Params) -> io::Result<(Outcome, u64)> {
    let mut ear = Ear::new(socket, p.blksize);
    if let Some(oack) = p.oack {
        if let Some(end) = handshake(socket, &mut ear, &oack.oack(), &p).await? {
            return Ok((end, 0));
        }
    }
    let mut w = Window::new(content, &p);
    loop {
        w.fill()?;
        let (sent, err) = w.send(socket, &ear).await;
        w.next += sent as u64;
        if let Some(e) = err {
            if gone(&e) {
                return Ok((Outcome::ClientGone, w.acked_bytes()));
            }
            // ENOBUFS and the like: the unsent packets are lost, recovered by
            // timeout.
        }
        let deadline = Instant::now() + p.timeout;
        loop {
            match ear.hear(deadline).await? {
                Heard::Ack(block) => match w.ack(block) {
                    Acked::Wait => continue,
                    Acked::Send => break,
                    Acked::All => return Ok((Outcome::Complete, w.len)),
                },
                Heard::Error { code, message } => {
                    return Ok((Outcome::ClientError { code, message }, w.acked_bytes()))
                }
                Heard::Timeout => {
                    w.tries += 1;
                    if w.tries > p.retries {
                        return Ok((Outcome::TimedOut, w.acked_bytes()));
                    }
                    w.next = w.acked + 1;
                    break;
                }
            }
        }
    }
}

/// Sends the OACK until the client acknowledges it with ACK 0. `Some`: the
/// transfer ended there (the client's ERROR, its port closed, or silence).
async fn handshake(
    socket: &UdpSocket,
    ear: &mut Ear<'_>,
    oack: &[u8],
    p: &Params,
) -> io::Result<Option<Outcome>> {
    let mut tries = 0;
    loop {
        if let Err(e) = socket.send(oack).await {
            if gone(&e) {
                return Ok(Some(Outcome::ClientGone));
            }
        }
        let deadline = Instant::now() + p.timeout;
        loop {
            match ear.hear(deadline).await? {
                Heard::Ack(0) => return Ok(None),
                Heard::Ack(_) => {}
                Heard::Error { code, message } => {
                    return Ok(Some(Outcome::ClientError { code, message }))
                }
                Heard::Timeout => {
                    tries += 1;
                    if tries > p.retries {
                        return Ok(Some(Outcome::TimedOut));
                    }
                    break;
                }
            }
        }
    }
}

/// What an ACK means for the window.
enum Acked {
    /// Duplicate or stale: keep waiting.
    Wait,
    /// Send what is due now (the window slid, or a block was lost).
    Send,
    /// Every block acknowledged.
    All,
}

/// The data phase: which blocks are acknowledged, which are due, and the
/// packets due now.
struct Window<'c> {
    blocks: Blocks<'c>,
    len: u64,
    /// Blocks in the file; the last is shorter than blksize, possibly empty.
    total: u64,
    blksize: u16,
    window: u64,
    /// One DATA packet: header and a full block.
    segment: usize,
    /// The packets due now, back to back, sent with one syscall (batch.rs).
    packets: Vec<u8>,
    /// Blocks 1..=acked are acknowledged; `next` is the next block to send.
    acked: u64,
    next: u64,
    tries: u32,
    fast_resent: Option<u64>,
}

impl<'c> Window<'c> {
    fn new(content: &'c Content, p: &Params) -> Window<'c> {
        let len = content.len();
        let segment = usize::from(p.blksize) + 4;
        Window {
            blocks: content.blocks(),
            len,
            total: len / u64::from(p.blksize) + 1,
            blksize: p.blksize,
            window: u64::from(p.windowsize.max(1)),
            segment,
            packets: Vec::with_capacity(segment * usize::from(p.windowsize.max(1))),
            acked: 0,
            next: 1,
            tries: 0,
            fast_resent: None,
        }
    }

    fn acked_bytes(&self) -> u64 {
        (self.acked * u64::from(self.blksize)).min(self.len)
    }

    /// Puts the blocks due now (from `next` to the window's end) in `packets`.
    fn fill(&mut self) -> io::Result<()> {
        self.packets.clear();
        let bs = u64::from(self.blksize);
        let mut due = self.next;
        while due <= self.total && due <= self.acked + self.window {
            let start = self.packets.len();
            packet::data_header(&mut self.packets, due as u16);
            (self.blocks).read((due - 1) * bs, usize::from(self.blksize), &mut self.packets)?;
            due += 1;
            if self.packets.len() - start < self.segment {
                // A short block is the last one the client takes (a file
                // that shrank mid-transfer ends early), and GSO needs every
                // packet but the last to be full.
                break;
            }
        }
        Ok(())
    }

    /// Sends `packets`: how many went out, and the error that stopped the rest.
    async fn send(&self, socket: &UdpSocket, ear: &Ear<'_>) -> (usize, Option<io::Error>) {
        if self.packets.len() <= self.segment {
            // Lockstep and the storm: one packet, a plain `send`.
            if self.acked + 1 == self.next && self.tries == 0 {
                ear.forget_readiness();
            }
            return match socket.send(&self.packets).await {
                Ok(_) => (1, None),
                Err(e) => (0, Some(e)),
            };
        }
        let window = batch::Packets {
            buf: &self.packets,
            segment: self.segment,
        };
        batch::send(socket, window).await
    }

    fn ack(&mut self, block: u16) -> Acked {
        // Block numbers wrap at 65535 (to 0, as tftp-hpa does): map the
        // 16-bit number into the unacknowledged range.
        let ahead = u64::from(block.wrapping_sub(self.acked as u16));
        if ahead == 0 && self.next > self.acked + 1 && self.fast_resent != Some(self.acked) {
            // The client repeats its last in-order ACK while blocks are
            // outstanding: it lost the next one. Resend the window from
            // there, once per ACK value.
            self.fast_resent = Some(self.acked);
            self.next = self.acked + 1;
            return Acked::Send;
        }
        if ahead == 0 || self.acked + ahead >= self.next {
            // A duplicate or stale ACK: in lockstep never resend on it
            // (Sorcerer's Apprentice), wait for the timeout.
            return Acked::Wait;
        }
        self.acked += ahead;
        self.tries = 0;
        if self.acked == self.total {
            return Acked::All;
        }
        // An ACK short of the window's end slides the window; the blocks
        // after it are still in flight (clients that ACK every block) or lost
        // (then the client repeats this ACK).
        Acked::Send
    }
}
