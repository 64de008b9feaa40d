//! Load client for `bench/tftp.sh`: runs N concurrent TFTP reads of one file
//! from one process (one socket per transfer, like N machines), with optional
//! blksize/windowsize options, checks every byte against a local copy, and
//! prints one line: clients, ok, failed, wall time, throughput. Not part of the
//! pxed binary.
//!
//! cargo run --release --example tftp_load -- --server 127.0.0.1:69 --file undionly.kpxe \
//!     --clients 200 [--blksize 1468] [--windowsize 16] [--expect path] [--deadline-s 60]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

struct Args {
    server: SocketAddr,
    file: String,
    clients: usize,
    blksize: Option<u16>,
    windowsize: Option<u16>,
    expect: Option<Vec<u8>>,
    timeout: Duration,
    retries: u32,
    deadline: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        server: "127.0.0.1:69".parse().map_err(|e| format!("{e}"))?,
        file: String::new(),
        clients: 1,
        blksize: None,
        windowsize: None,
        expect: None,
        timeout: Duration::from_secs(1),
        retries: 5,
        deadline: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--server" => a.server = value.parse().map_err(|e| format!("--server: {e}"))?,
            "--file" => a.file = value.clone(),
            "--clients" => a.clients = num()? as usize,
            "--blksize" => a.blksize = Some(num()? as u16),
            "--windowsize" => a.windowsize = Some(num()? as u16),
            "--expect" => {
                a.expect = Some(std::fs::read(&value).map_err(|e| format!("--expect: {e}"))?)
            }
            "--timeout-ms" => a.timeout = Duration::from_millis(num()?),
            "--retries" => a.retries = num()? as u32,
            "--deadline-s" => a.deadline = Duration::from_secs(num()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.file.is_empty() {
        return Err("--file is required".into());
    }
    Ok(a)
}

fn rrq(a: &Args) -> Vec<u8> {
    let mut p = vec![0, 1];
    let mut put = |s: &str| {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    };
    put(&a.file);
    put("octet");
    put("tsize");
    put("0");
    if let Some(b) = a.blksize {
        put("blksize");
        put(&b.to_string());
    }
    if let Some(w) = a.windowsize {
        put("windowsize");
        put(&w.to_string());
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

/// Option values from an OACK body.
fn oack_option(body: &[u8], name: &str) -> Option<u64> {
    let mut fields = body.split(|&b| b == 0);
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if k.eq_ignore_ascii_case(name.as_bytes()) {
            return std::str::from_utf8(v).ok()?.parse().ok();
        }
    }
    None
}

async fn fetch(a: &Args) -> Result<Vec<u8>, String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let request = rrq(a);
    sock.send_to(&request, a.server)
        .await
        .map_err(|e| e.to_string())?;
    let mut tid: Option<SocketAddr> = None;
    let mut last: Vec<u8> = request;
    let (mut blksize, mut window) = (512usize, 1u32);
    let mut expected: u16 = 1;
    let mut since_ack = 0u32;
    let mut gap_acked = false;
    let mut got_data = false;
    let mut data = Vec::new();
    let mut retries = 0;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match tokio::time::timeout(a.timeout, sock.recv_from(&mut buf)).await {
            Err(_) => {
                retries += 1;
                if retries > a.retries {
                    return Err(format!("timed out after {} bytes", data.len()));
                }
                let to = tid.unwrap_or(a.server);
                let _ = sock.send_to(&last, to).await;
                continue;
            }
            Ok(r) => r.map_err(|e| e.to_string())?,
        };
        match tid {
            None => tid = Some(from),
            Some(t) if t != from => continue,
            Some(_) => {}
        }
        let to = from;
        let pkt = &buf[..n];
        if n < 4 {
            continue;
        }
        match u16::from_be_bytes([pkt[0], pkt[1]]) {
            6 if !got_data => {
                if let Some(b) = oack_option(&pkt[2..], "blksize") {
                    blksize = b as usize;
                }
                if let Some(w) = oack_option(&pkt[2..], "windowsize") {
                    window = w as u32;
                }
                last = ack(0).to_vec();
                let _ = sock.send_to(&last, to).await;
                retries = 0;
            }
            3 => {
                got_data = true;
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                let payload = &pkt[4..];
                if block == expected {
                    data.extend_from_slice(payload);
                    expected = expected.wrapping_add(1);
                    since_ack += 1;
                    retries = 0;
                    gap_acked = false;
                    let end = payload.len() < blksize;
                    if end || since_ack >= window {
                        last = ack(block).to_vec();
                        let _ = sock.send_to(&last, to).await;
                        since_ack = 0;
                    }
                    if end {
                        return Ok(data);
                    }
                } else if window == 1 || !gap_acked {
                    // Duplicate (lockstep) or a gap (window): ACK the last
                    // in-order block.
                    gap_acked = true;
                    last = ack(expected.wrapping_sub(1)).to_vec();
                    let _ = sock.send_to(&last, to).await;
                    since_ack = 0;
                }
            }
            5 => {
                return Err(format!(
                    "ERROR {}: {}",
                    u16::from_be_bytes([pkt[2], pkt[3]]),
                    String::from_utf8_lossy(&pkt[4..n.saturating_sub(1).max(4)])
                ))
            }
            _ => {}
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tftp_load: {e}");
            std::process::exit(2);
        }
    };
    let a: &'static Args = Box::leak(Box::new(a));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..a.clients {
        set.spawn(async move {
            let r = tokio::time::timeout(a.deadline, fetch(a)).await;
            (r, start.elapsed())
        });
    }
    let (mut ok, mut failed, mut bytes) = (0usize, 0usize, 0u64);
    let mut wall = Duration::ZERO;
    let mut first_error = None;
    while let Some(done) = set.join_next().await {
        let Ok((r, at)) = done else {
            failed += 1;
            continue;
        };
        wall = wall.max(at);
        match r {
            Ok(Ok(data)) if a.expect.as_ref().map_or(true, |e| *e == data) => {
                ok += 1;
                bytes += data.len() as u64;
            }
            Ok(Ok(data)) => {
                failed += 1;
                first_error.get_or_insert(format!("content differs ({} bytes)", data.len()));
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert("deadline".into());
            }
        }
    }
    let secs = wall.as_secs_f64();
    println!(
        "clients={} ok={ok} failed={failed} wall_ms={:.1} bytes={bytes} MBps={:.1}{}",
        a.clients,
        secs * 1000.0,
        bytes as f64 / secs.max(1e-9) / 1e6,
        first_error
            .map(|e| format!(" first_error={e:?}"))
            .unwrap_or_default()
    );
}
