//! Load client for `bench/tftp.sh`: runs N concurrent TFTP reads of one file
//! from one process (one socket per transfer, like N machines), with optional
//! blksize/windowsize options, checks every byte against a local copy, and
//! prints one line: clients, ok, failed, wall time, throughput. Not part of the
//! pxed binary.
//!
//! cargo run --release --example tftp_load -- --server 127.0.0.1:69 --file undionly.kpxe \
//!     --clients 200 [--blksize 1468] [--windowsize 16] [--expect path] [--deadline-s 60]

#[path = "storm/machine/tftp.rs"]
mod tftp;
#[path = "../tests/common/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// The request every client sends (the TFTP client is shared with the storm
/// client: `storm/machine/tftp.rs`).
fn request(a: &Args) -> tftp::Rrq {
    tftp::Rrq {
        file: a.file.clone(),
        blksize: a.blksize,
        windowsize: a.windowsize,
        probe_size_first: false,
        timeout: a.timeout,
        retries: a.retries,
    }
}

async fn fetch(a: &Args) -> Result<Vec<u8>, String> {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    tftp::fetch(local, a.server, &request(a)).await
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
    // This process's own CPU time: when it is close to the wall time, the
    // client, not the server, bounded the run.
    let client_cpu_ms = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let ms =
                |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
            ms(u.user_time()) + ms(u.system_time())
        })
        .unwrap_or(f64::NAN);
    println!(
        "clients={} ok={ok} failed={failed} wall_ms={:.1} bytes={bytes} MBps={:.1} client_cpu_ms={client_cpu_ms:.0}{}",
        a.clients,
        secs * 1000.0,
        bytes as f64 / secs.max(1e-9) / 1e6,
        first_error
            .map(|e| format!(" first_error={e:?}"))
            .unwrap_or_default()
    );
}
