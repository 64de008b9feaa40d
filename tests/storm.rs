//! Issue 7, the boot storm in CI: 300 simulated machines boot at once against
//! the real `pxed` in a network namespace (PXE ROM DHCP, TFTP of the real
//! undionly.kpxe with the ROM's tsize/ERROR 8 dance for half of them, iPXE
//! DHCP, boot.ipxe and the rendered script over HTTP), and every one must
//! complete. The machines are `examples/storm/machine` (the client of
//! `bench/storm.sh`, which runs the 10,000-machine version and the peers).
//! Behaviour only: the figures are printed, not asserted.

mod common;
use common::wire;
#[path = "../examples/storm/machine/mod.rs"]
#[allow(dead_code)]
mod machine;

use std::sync::Arc;
use std::time::Duration;

use common::{privileged, ConfigDir, NetnsPair, Pxed};

const MACHINES: usize = 300;

#[test]
fn a_boot_storm_of_300_machines_completes_without_failures() {
    if !privileged("boot storm") {
        return;
    }
    let undionly = std::path::Path::new("/usr/lib/ipxe/undionly.kpxe");
    if !undionly.exists() {
        common::skip(
            "boot storm",
            "no /usr/lib/ipxe/undionly.kpxe (apt-get install ipxe)",
        );
        return;
    }
    let lab = NetnsPair::new("storm", "10.96.0.1/18");
    lab.cli.sh("ip addr add 10.96.0.2/18 dev vc");
    let rules = std::fs::read_to_string(common::repo().join("bench/storm.toml")).unwrap();
    let dir = ConfigDir::new(
        "http_listen = \"0.0.0.0:8080\"\ntftp_listen = \"0.0.0.0:69\"\nsearch_paths = [\"/usr/lib/ipxe\"]",
        &rules,
    );
    let pxed = Pxed::start(&dir.config(), Some(&lab.srv.name));
    pxed.wait_log("dhcp listening", Duration::from_secs(10));
    pxed.wait_log("tftp listening", Duration::from_secs(10));
    let options = machine::Options {
        machines: MACHINES,
        expect: Some(Arc::new(std::fs::read(undionly).unwrap())),
        ..machine::Options::default()
    };
    let report = lab.client(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(machine::run(options)).unwrap()
    });
    let rss = common::status_kib(pxed.pid(), "VmHWM");
    println!("{}pxed peak RSS {rss} KiB", report.summary());
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.completed, MACHINES);
    // Every machine was served its own script (checked per machine by the
    // client) and the TFTP transfers all completed on the server's side too.
    let log = pxed.log();
    let complete = log
        .lines()
        .filter(|l| l.contains("tftp transfer") && l.contains("outcome=\"ok\""))
        .count();
    assert_eq!(complete, MACHINES, "completed TFTP transfers in pxed's log");
}
