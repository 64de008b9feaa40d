//! A simulated boot storm: N machines, each booting the way a BIOS server
//! with a PXE ROM chainloading iPXE does (docs/BRIEF "The boot flow"):
//!
//! 1. `rom-dhcp`: the PXE ROM's DISCOVER/OFFER/REQUEST/ACK (option 93 = 0,
//!    `PXEClient`), which must hand out `undionly.kpxe` and siaddr;
//! 2. `tftp`: RRQ of that file from siaddr (a share of the machines first do
//!    the ROM's `tsize` → OACK → ERROR 8 → RRQ again), checked byte for byte;
//! 3. `ipxe-dhcp`: iPXE asks again with user class `iPXE` and must get an
//!    `http://…/boot.ipxe` URL;
//! 4. `bootstrap`: GET of that URL, an iPXE script with a `chain` line;
//! 5. `script`: GET of the chain URL with iPXE's settings expanded
//!    (`${product:uristring}`, `${mac}`, …): the machine's rendered script.
//!
//! Every step has a timeout and retries as firmware does; a machine that
//! fails a step after its retries is counted under that step. At most
//! `concurrency` machines boot at once. Used by `examples/storm/main.rs`
//! (`bench/storm.sh`) and by `tests/storm.rs` (a small storm in CI).

pub mod dhcp;
pub mod http;
pub mod tftp;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcp::{Dhcp, Firmware};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    RomDhcp,
    Tftp,
    IpxeDhcp,
    Bootstrap,
    Script,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::RomDhcp,
        Step::Tftp,
        Step::IpxeDhcp,
        Step::Bootstrap,
        Step::Script,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::RomDhcp => "rom-dhcp",
            Step::Tftp => "tftp",
            Step::IpxeDhcp => "ipxe-dhcp",
            Step::Bootstrap => "bootstrap",
            Step::Script => "script",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Interface the DHCP broadcasts leave and arrive on.
    pub interface: String,
    pub machines: usize,
    /// Machines booting at the same time.
    pub concurrency: usize,
    /// Share (0..=1) of PXE ROMs that probe the size first (`tsize`, ERROR 8).
    pub probe_share: f64,
    /// The boot file's expected bytes (undionly.kpxe), checked when set.
    pub expect: Option<Arc<Vec<u8>>>,
    /// Low 24 bits of the first machine's MAC (52:54:00:xx:xx:xx).
    pub mac_base: u32,
    /// The rendered script must name the machine's MAC (pxed renders one per
    /// machine; a static peer script does not).
    pub script_names_machine: bool,
    pub dhcp_timeout: Duration,
    pub dhcp_tries: u32,
    pub tftp_timeout: Duration,
    pub tftp_retries: u32,
    pub http_timeout: Duration,
    pub http_tries: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            interface: "vc".into(),
            machines: 300,
            concurrency: 256,
            probe_share: 0.5,
            expect: None,
            mac_base: 0x10_0000,
            script_names_machine: true,
            dhcp_timeout: Duration::from_secs(1),
            dhcp_tries: 4,
            tftp_timeout: Duration::from_secs(1),
            tftp_retries: 5,
            http_timeout: Duration::from_secs(10),
            http_tries: 3,
        }
    }
}

/// The outcome of a storm.
#[derive(Debug, Default)]
pub struct Report {
    pub machines: usize,
    pub completed: usize,
    /// Machines that gave up at each step.
    pub failures: BTreeMap<Step, usize>,
    /// The first few failure reasons, for diagnosis.
    pub errors: Vec<String>,
    pub wall: Duration,
    /// Duration of each completed step, per step.
    pub latencies: BTreeMap<Step, Vec<Duration>>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    /// The `p`-th percentile (0..=100) of a step's durations.
    pub fn percentile(&self, step: Step, p: f64) -> Option<Duration> {
        let v = self.latencies.get(&step)?;
        if v.is_empty() {
            return None;
        }
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v.get(i).copied()
    }

    /// The summary lines `bench/storm.sh` prints and parses.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "machines={} completed={} failed={} wall_s={:.2}\n",
            self.machines,
            self.completed,
            self.failed(),
            self.wall.as_secs_f64()
        );
        for step in Step::ALL {
            let ms = |p| {
                self.percentile(step, p)
                    .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
            };
            s += &format!(
                "step={:<9} done={:<6} failed={:<5} p50_ms={:<8} p99_ms={:<8} max_ms={}\n",
                step.name(),
                self.latencies.get(&step).map_or(0, Vec::len),
                self.failures.get(&step).copied().unwrap_or(0),
                ms(50.0),
                ms(99.0),
                ms(100.0),
            );
        }
        for e in &self.errors {
            s += &format!("error: {e}\n");
        }
        s
    }
}

/// Who a simulated machine is.
struct Machine {
    n: usize,
    mac: [u8; 6],
    product: &'static str,
    serial: String,
    uuid: String,
}

/// SMBIOS products seen in data centres, one placeholder among them.
const PRODUCTS: [&str; 5] = [
    "Express5800/i120Ra-e1 [N8100-1482Y]",
    "PowerEdge R640",
    "ProLiant DL360 Gen10",
    "ThinkSystem SR650",
    "To Be Filled By O.E.M.",
];

impl Machine {
    fn new(n: usize, mac_base: u32) -> Machine {
        let m = (mac_base.wrapping_add(n as u32) & 0xff_ffff).to_be_bytes();
        Machine {
            n,
            mac: [0x52, 0x54, 0x00, m[1], m[2], m[3]],
            product: PRODUCTS[n % PRODUCTS.len()],
            serial: format!("SN{n:07}"),
            uuid: format!("4c4c4544-0000-1000-8000-{:012x}", n),
        }
    }

    fn mac_text(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    /// iPXE's settings as `boot.ipxe` expands them.
    fn setting(&self, name: &str) -> Option<String> {
        Some(match name {
            "product" => self.product.to_string(),
            "serial" => self.serial.clone(),
            "manufacturer" => "Storm Systems".to_string(),
            "uuid" => self.uuid.clone(),
            "mac" => self.mac_text(),
            "platform" => "pcbios".to_string(),
            "buildarch" => "i386".to_string(),
            _ => return None,
        })
    }
}

type Timed = Vec<(Step, Duration)>;

/// Runs the storm; returns when every machine has completed or given up.
pub async fn run(o: Options) -> Result<Report, String> {
    let dhcp = Arc::new(Dhcp::bind(&o.interface).map_err(|e| {
        format!(
            "cannot bind the DHCP client port 68 on {}: {e}",
            o.interface
        )
    })?);
    let o = Arc::new(o);
    // xids differ from run to run, so a late reply to an earlier run is ignored.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let slots = Arc::new(tokio::sync::Semaphore::new(o.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..o.machines {
        let (o, dhcp, slots) = (o.clone(), dhcp.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let m = Machine::new(n, o.mac_base);
            let xid = salt.wrapping_add((n as u32).wrapping_mul(4));
            let mut timed = Timed::new();
            let result = boot(&o, &dhcp, &m, xid, &mut timed).await;
            (timed, result)
        });
    }
    let mut report = Report {
        machines: o.machines,
        ..Report::default()
    };
    while let Some(done) = tasks.join_next().await {
        let (timed, result) = done.map_err(|e| format!("a machine task failed: {e}"))?;
        for (step, d) in timed {
            report.latencies.entry(step).or_default().push(d);
        }
        match result {
            Ok(()) => report.completed += 1,
            Err((step, why)) => {
                *report.failures.entry(step).or_default() += 1;
                if report.errors.len() < 8 {
                    report.errors.push(format!("{}: {why}", step.name()));
                }
            }
        }
    }
    report.wall = started.elapsed();
    for v in report.latencies.values_mut() {
        v.sort();
    }
    Ok(report)
}

/// One machine's boot, step by step; the first step that fails ends it.
async fn boot(
    o: &Options,
    dhcp: &Dhcp,
    m: &Machine,
    xid: u32,
    timed: &mut Timed,
) -> Result<(), (Step, String)> {
    let rom = step(timed, Step::RomDhcp, async {
        let l = dhcp
            .dora(m.mac, Firmware::PxeRom, xid, o.dhcp_timeout, o.dhcp_tries)
            .await?;
        if l.boot_file.starts_with("http") || l.next_server.is_unspecified() {
            return Err(format!(
                "a PXE ROM got boot file {:?} from {}",
                l.boot_file, l.next_server
            ));
        }
        Ok(l)
    })
    .await?;

    step(timed, Step::Tftp, async {
        let request = tftp::Rrq {
            file: rom.boot_file.clone(),
            blksize: Some(1432),
            windowsize: None,
            probe_size_first: ((m.n % 100) as f64) < o.probe_share * 100.0,
            timeout: o.tftp_timeout,
            retries: o.tftp_retries,
        };
        let server = SocketAddr::from((rom.next_server, 69));
        let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let data = tftp::fetch(local, server, &request).await?;
        match &o.expect {
            Some(e) if **e != data => Err(format!(
                "{} differs from the expected file ({} bytes, {} expected)",
                request.file,
                data.len(),
                e.len()
            )),
            _ => Ok(()),
        }
    })
    .await?;

    let ipxe = step(timed, Step::IpxeDhcp, async {
        let l = dhcp
            .dora(
                m.mac,
                Firmware::Ipxe,
                xid.wrapping_add(1),
                o.dhcp_timeout,
                o.dhcp_tries,
            )
            .await?;
        if !l.boot_file.starts_with("http://") {
            return Err(format!("iPXE got boot file {:?}", l.boot_file));
        }
        if l.ip != rom.ip {
            return Err(format!("iPXE got {}, its PXE ROM had {}", l.ip, rom.ip));
        }
        Ok(l)
    })
    .await?;

    let mut client = http::Client::default();
    let bootstrap = step(timed, Step::Bootstrap, async {
        let script = get(o, &mut client, &ipxe.boot_file).await?;
        let url = http::chain_url(&script)
            .ok_or_else(|| format!("no chain line in {:?}", first_line(&script)))?;
        Ok(http::expand(url, |name| m.setting(name)))
    })
    .await?;

    step(timed, Step::Script, async {
        let script = get(o, &mut client, &bootstrap).await?;
        if !script.starts_with("#!ipxe") || !script.contains("kernel ") {
            return Err(format!("not a boot script: {:?}", first_line(&script)));
        }
        if o.script_names_machine && !script.contains(&m.mac_text()) {
            return Err(format!("the script does not name {}", m.mac_text()));
        }
        Ok(())
    })
    .await
}

/// Runs one step, recording its duration when it succeeds.
async fn step<T>(
    timed: &mut Timed,
    step: Step,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, (Step, String)> {
    let started = Instant::now();
    let r = f.await.map_err(|e| (step, e))?;
    timed.push((step, started.elapsed()));
    Ok(r)
}

/// GET with a timeout per attempt and `http_tries` attempts (a new
/// connection each time), as iPXE's `chain` retries in `boot.ipxe` do.
async fn get(o: &Options, client: &mut http::Client, url: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..o.http_tries.max(1) {
        match tokio::time::timeout(o.http_timeout, client.get(url)).await {
            Ok(Ok(body)) => return Ok(body),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no response within {:?}", o.http_timeout),
        }
        *client = http::Client::default();
    }
    Err(format!("GET {url}: {last}"))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
