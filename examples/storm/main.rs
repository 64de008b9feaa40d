//! `bench/storm.sh`'s client: a simulated boot storm of N machines against a
//! boot server on the local segment (DHCP broadcasts on `--interface`, TFTP
//! and HTTP to the addresses the DHCP answers name). Prints one summary line,
//! one line per step (completed, failed, p50/p99/max), the first errors, and
//! the server's peak RSS when `--pid` is given. Exits 1 if any machine failed.
//! What a machine does: `machine/mod.rs`.
//!
//! ip netns exec <client-ns> target/release/examples/storm --interface vc \
//!     --machines 10000 [--concurrency 256] [--probe-share 0.5] \
//!     [--expect /usr/lib/ipxe/undionly.kpxe] [--pid <server pid>] [--static-script] \
//!     [--dhcp-tries 4] [--dhcp-timeout-ms 1000] [--tftp-timeout-ms 1000]

mod machine;
#[path = "../../tests/common/wire.rs"]
mod wire;

use std::sync::Arc;
use std::time::Duration;

fn options() -> Result<(machine::Options, Option<u32>), String> {
    let mut o = machine::Options::default();
    let mut pid = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--static-script" {
            o.script_names_machine = false;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--interface" => o.interface = value.clone(),
            "--machines" => o.machines = num()? as usize,
            "--concurrency" => o.concurrency = num()? as usize,
            "--probe-share" => o.probe_share = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--expect" => {
                let bytes = std::fs::read(&value).map_err(|e| format!("--expect {value}: {e}"))?;
                o.expect = Some(Arc::new(bytes));
            }
            "--mac-base" => o.mac_base = num()? as u32,
            "--pid" => pid = Some(num()? as u32),
            "--dhcp-timeout-ms" => o.dhcp_timeout = Duration::from_millis(num()?),
            "--dhcp-tries" => o.dhcp_tries = num()? as u32,
            "--tftp-timeout-ms" => o.tftp_timeout = Duration::from_millis(num()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((o, pid))
}

/// VmHWM (peak resident set) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() {
    let (o, pid) = match options() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::exit(2);
        }
    };
    let (machines, concurrency) = (o.machines, o.concurrency);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(machine::run(o)) {
        Ok(report) => {
            print!("concurrency={concurrency} ");
            print!("{}", report.summary());
            if let Some(kib) = pid.and_then(peak_rss_kib) {
                println!("server_peak_rss_kib={kib}");
            }
            if report.completed != machines {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::exit(2);
        }
    }
}
