//! Fault tests: what a real host does to a boot server. kill -9 in the middle
//! of lease commits; the lease database's disk filling up or turning
//! read-only (at start and while serving); a boot file truncated or deleted
//! while it is being sent; the template directory and the config file
//! deleted while serving. Each test checks that clients get an answer or an
//! error promptly, that no ACK leaves without its lease stored, and that the
//! database opens cleanly (SQLite `integrity_check`) afterwards.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::dhcp::*;
use common::http::get;
use common::tftp::{ack, client, opcode, recv, rrq};
use common::{privileged, sh, ConfigDir, Pxed};
use dhcproto::v4::{DhcpOption, Message, MessageType};

// ------------------------------------------------------------- helpers ----

/// A tmpfs of `size` mounted at `path`, unmounted when dropped. Mounted in the
/// host's mount namespace before pxed starts; `ip netns exec` copies it, and
/// a remount (read-only/read-write) changes the one filesystem both see.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={size} pxed-fault {}",
            path.display()
        ));
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Remounts read-only or read-write, here and in the mount namespace of
    /// `pxed` if given: `ip netns exec` gave it a copy of the mount, and a
    /// copy made while the filesystem was read-only stays read-only until
    /// remounted there too.
    fn read_only(&self, ro: bool, pxed: Option<&Pxed>) {
        let mode = if ro { "ro" } else { "rw" };
        sh(&format!("mount -o remount,{mode} {}", self.path.display()));
        if let Some(p) = pxed {
            sh(&format!(
                "nsenter -t {} -m mount -o remount,{mode} {}",
                p.pid(),
                self.path.display()
            ));
        }
    }

    /// Fills the filesystem to the last block.
    fn fill(&self) {
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.path.join("fill").display()))
            .stderr(std::process::Stdio::null())
            .status();
        // dd stops at the last whole block: take the rest byte by byte.
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=1", "oflag=append", "conv=notrunc"])
            .arg(format!("of={}", self.path.join("fill").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn unfill(&self) {
        std::fs::remove_file(self.path.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Full DHCP on the lab (10.77.0.0/24), HTTP and TFTP on every address; the
/// lease database at `lease_db` (relative to the config).
fn lab_config(lease_db: &str, fsync: bool) -> ConfigDir {
    let dir = ConfigDir::new(
        "http_listen = \"0.0.0.0:8080\"\ntftp_listen = \"0.0.0.0:69\"",
        &lab_rules(lease_db, fsync),
    );
    dir.asset("undionly.kpxe", &vec![0x5a; 3000]);
    dir
}

fn lab_rules(lease_db: &str, fsync: bool) -> String {
    format!(
        r#"
[defaults]
kernel = "vmlinuz"

[[rule]]
name = "default"
args = "gen=1"

[dhcp]
mode = "full"
lease_db = "{lease_db}"
lease_fsync = {fsync}
[[dhcp.subnet]]
network = "10.77.0.0/16"
pool = "10.77.1.0-10.77.250.255"
lease_time = 3600
"#
    )
}

/// DISCOVER → OFFER (must come) → REQUEST; the ACK if one comes within `wait`.
fn offer_then_request(sock: &UdpSocket, mac: [u8; 6], wait: Duration) -> Option<Message> {
    let d = packet(MessageType::Discover, mac, vec![]);
    let offer = ask(sock, &d, bcast(67), WAIT).expect("an OFFER (offers need no disk)");
    request(sock, mac, offer.yiaddr(), wait)
}

fn request(sock: &UdpSocket, mac: [u8; 6], ip: Ipv4Addr, wait: Duration) -> Option<Message> {
    let r = packet(
        MessageType::Request,
        mac,
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );
    let reply = ask(sock, &r, bcast(67), wait)?;
    assert_eq!(msg_type(&reply), Some(MessageType::Ack), "{reply:?}");
    Some(reply)
}

/// Asks for `ip` until an ACK comes (a client retrying its REQUEST).
fn request_until_acked(sock: &UdpSocket, mac: [u8; 6], ip: Ipv4Addr) -> Message {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(ack) = request(sock, mac, ip, Duration::from_millis(700)) {
            return ack;
        }
        assert!(Instant::now() < deadline, "no ACK for {ip} within 15 s");
    }
}

/// HTTP and TFTP answer (from the client namespace): what pxed can serve
/// without its lease database.
fn http_and_tftp_answer() {
    let addr = SocketAddr::from((SERVER, 8080));
    let (head, body) = get(addr, "/ipxe?mac=52:54:00:77:00:01");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("gen=1"), "{body}");
    let c = client();
    c.send_to(&rrq("undionly.kpxe", &[]), SocketAddr::from((SERVER, 69)))
        .unwrap();
    let (p, from) = recv(&c);
    assert_eq!(opcode(&p), 3, "DATA 1 of undionly.kpxe, got {p:?}");
    // Finish it: 3000 bytes are six blocks.
    c.send_to(&ack(1), from).unwrap();
    for block in 2..=6u16 {
        let (p, _) = recv(&c);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), block);
        c.send_to(&ack(block), from).unwrap();
    }
}

/// Every ACK on the wire is in the database (the last one per MAC), no
/// address was ACKed to two machines, no machine holds two rows, and SQLite
/// finds the file intact.
fn assert_acks_stored(acks: &[(String, String)], db: &Path) -> usize {
    assert_eq!(integrity(db), "ok", "{}", db.display());
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (mac, ip) in acks {
        let first = owner.entry(ip.as_str()).or_insert(mac.as_str());
        assert_eq!(*first, mac.as_str(), "{ip} was ACKed to two machines");
    }
    let last: HashMap<&str, &str> = acks
        .iter()
        .map(|(m, ip)| (m.as_str(), ip.as_str()))
        .collect();
    let rows = lease_rows(db);
    let macs: HashSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(macs.len(), rows.len(), "a client holds two leases");
    let by_mac = bound_by_mac(&rows);
    for (mac, ip) in &last {
        assert_eq!(
            by_mac.get(mac).map(|i| i.to_string()).as_deref(),
            Some(*ip),
            "{mac} was ACKed {ip} but the database says otherwise"
        );
    }
    rows.len()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

// -------------------------------------------------------------- kill -9 ----

/// kill -9 four times during a perfdhcp load on one database, restarting in
/// between: twice at an arbitrary moment, twice the instant the WAL file is
/// written with `lease_fsync = true` (the batch's frames are written and
/// being fsynced, its ACKs not yet sent: the kill lands inside the commit).
/// After every kill the database passes `integrity_check`; at the end every
/// ACK seen on the wire in all rounds is in it, and no address was ever ACKed
/// to two machines (a lost lease would be handed out again).
#[test]
fn every_acked_lease_survives_kill_9_inside_commits() {
    if !privileged("kill -9 inside commits")
        || !common::have_tool("perfdhcp", "kill -9 inside commits")
        || !common::have_tool("tshark", "kill -9 inside commits")
    {
        return;
    }
    let lab = new_lab("fk9");
    lab.cli.sh("ip addr add 10.77.0.2/24 dev vc");
    let dir = lab_config("pxed-leases.sqlite", false);
    let db = dir.path().join("pxed-leases.sqlite");
    let wal = dir.path().join("pxed-leases.sqlite-wal");
    let capture = Capture::start(&lab.cli.name, "vc", &dir.path().join("acks.pcap"));
    let mut inside = 0;
    for round in 0..4u64 {
        let at_write = round % 2 == 1;
        dir.write_config(
            "http_listen = \"0.0.0.0:8080\"\ntftp_listen = \"\"",
            &lab_rules("pxed-leases.sqlite", at_write),
        );
        let mut pxed = start(&lab, &dir);
        let perf = Perfdhcp::start(&lab, 1500, 10);
        std::thread::sleep(Duration::from_millis(1500 + 250 * round));
        if at_write {
            let modified = || std::fs::metadata(&wal).and_then(|m| m.modified()).ok();
            let before = modified();
            let deadline = Instant::now() + Duration::from_secs(3);
            while modified() == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
            }
            if modified() != before {
                inside += 1;
            }
        }
        pxed.signal("KILL");
        drop(perf);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pxed.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!pxed.is_running(), "round {round}: pxed survived kill -9");
        assert_eq!(integrity(&db), "ok", "round {round}");
    }
    let pxed = start(&lab, &dir);
    let loaded = pxed.wait_log("leases loaded", Duration::from_secs(10));
    drop(pxed);
    let acks = capture.acks();
    assert!(acks.len() > 400, "only {} ACKs on the wire", acks.len());
    assert_eq!(inside, 2, "the WAL was not written during the load");
    let rows = assert_acks_stored(&acks, &db);
    println!(
        "kill -9: 4 rounds ({inside} inside a commit), {} ACKs on the wire, {rows} leases stored, every ACKed lease present, integrity ok; {}",
        acks.len(),
        loaded.lines().find(|l| l.contains("leases loaded")).unwrap_or("")
    );
}

// ------------------------------------------------------------ disk full ----

/// The lease database's filesystem fills up while pxed serves: OFFERs go on
/// (they need no disk), ACKs stop (a lease that cannot be recorded is not
/// given), the log says why once (not once per packet), HTTP and TFTP keep
/// serving; when space returns, the waiting client's retry is ACKed and
/// nothing in the database is damaged.
#[test]
fn disk_full_withholds_acks_and_recovers() {
    if !privileged("lease disk full") {
        return;
    }
    let lab = new_lab("ffu");
    lab.cli.sh("ip addr add 10.77.0.2/24 dev vc");
    let dir = lab_config("leases/pxed-leases.sqlite", false);
    let fs = Tmpfs::mount(&dir.path().join("leases"), "256k");
    let pxed = start(&lab, &dir);
    let db = dir.path().join("leases/pxed-leases.sqlite");
    let mut acked = Vec::new();
    let (withheld_mac, withheld_ip) = lab.client(|| {
        let s = socket(68);
        let ack = offer_then_request(&s, mac(1), WAIT).expect("an ACK before the disk fills");
        acked.push((mac(1), ack.yiaddr()));
        fs.fill();
        // SQLite reuses the space its files already have: some commits may
        // still fit. The first REQUEST that needs a new block gets no ACK.
        for n in 2..=200u8 {
            let d = packet(MessageType::Discover, mac(n), vec![]);
            let offer = ask(&s, &d, bcast(67), WAIT).expect("an OFFER on a full disk");
            match request(&s, mac(n), offer.yiaddr(), Duration::from_millis(700)) {
                Some(ack) => acked.push((mac(n), ack.yiaddr())),
                None => return (mac(n), offer.yiaddr()),
            }
        }
        panic!("200 leases stored on a full 256k filesystem");
    });
    let log = pxed.wait_log("cannot store leases", Duration::from_secs(5));
    assert!(log.contains("disk is full"), "{log}");
    lab.client(http_and_tftp_answer);
    // Clients keep retrying; the log does not repeat itself for each.
    lab.client(|| {
        let s = socket(68);
        for _ in 0..5 {
            assert!(request(&s, withheld_mac, withheld_ip, Duration::from_millis(300)).is_none());
        }
    });
    std::thread::sleep(Duration::from_millis(2500));
    let log = pxed.log();
    assert!(count(&log, "cannot store leases") <= 2, "{log}");
    assert!(count(&log, "checkpoint failed") <= 1, "{log}");

    fs.unfill();
    let ack = lab.client(|| request_until_acked(&socket(68), withheld_mac, withheld_ip));
    assert_eq!(ack.yiaddr(), withheld_ip);
    acked.push((withheld_mac, withheld_ip));
    pxed.wait_log("lease database writable again", Duration::from_secs(5));
    drop(pxed);
    let stored = assert_acks_stored(&as_text(&acked), &db);
    println!(
        "disk full: {} ACKs before the disk filled, ACKs withheld while full, {stored} leases stored after space returned, integrity ok",
        acked.len() - 1
    );
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ------------------------------------------------------------ read-only ----

/// The lease database's directory is read-only when pxed starts: pxed says so
/// and serves HTTP and TFTP, but its DHCP answers nobody (it cannot record a
/// lease, and must not hand out addresses from a table it may not keep); once
/// the directory is writable, DHCP starts by itself with the stored leases.
#[test]
fn read_only_lease_directory_at_start() {
    if !privileged("read-only lease directory at start") {
        return;
    }
    let lab = new_lab("fro");
    lab.cli.sh("ip addr add 10.77.0.2/24 dev vc");
    let dir = lab_config("leases/pxed-leases.sqlite", false);
    let fs = Tmpfs::mount(&dir.path().join("leases"), "4m");
    let db = dir.path().join("leases/pxed-leases.sqlite");
    // A database with one lease in it, from an earlier run.
    let pxed = start(&lab, &dir);
    let first = lab.client(|| offer_then_request(&socket(68), mac(1), WAIT).expect("ACK"));
    drop(pxed);

    fs.read_only(true, None);
    let pxed = Pxed::start(&dir.config(), Some(&lab.srv.name));
    let log = pxed.wait_log("cannot open the lease database", Duration::from_secs(10));
    assert!(log.contains("read-only filesystem"), "{log}");
    assert!(log.contains("HTTP and TFTP are serving"), "{log}");
    lab.client(|| {
        http_and_tftp_answer();
        let d = packet(MessageType::Discover, mac(2), vec![]);
        assert!(
            ask(&socket(68), &d, bcast(67), Duration::from_millis(1500)).is_none(),
            "an OFFER without a lease database"
        );
    });
    fs.read_only(false, Some(&pxed));
    pxed.wait_log("leases loaded", Duration::from_secs(15));
    let (again, second) = lab.client(|| {
        let s = socket(68);
        let again = offer_then_request(&s, mac(1), WAIT).expect("ACK");
        let second = offer_then_request(&s, mac(2), WAIT).expect("ACK");
        (again, second)
    });
    assert_eq!(again.yiaddr(), first.yiaddr(), "the stored lease was kept");
    drop(pxed);
    let acks = [(mac(1), first.yiaddr()), (mac(2), second.yiaddr())];
    assert_acks_stored(&as_text(&acks), &db);
}

/// An ext4 filesystem on a loop device, mounted with `errors=remount-ro`,
/// unmounted (and its loop device freed) when dropped.
struct Ext4 {
    path: PathBuf,
    image: PathBuf,
}

impl Ext4 {
    fn mount(image: &Path, path: &Path) -> Ext4 {
        sh(&format!(
            "truncate -s 16M {i} && mkfs.ext4 -q -F {i}",
            i = image.display()
        ));
        let fs = Ext4 {
            path: path.to_path_buf(),
            image: image.to_path_buf(),
        };
        fs.remount();
        fs
    }

    fn remount(&self) {
        std::fs::create_dir_all(&self.path).unwrap();
        sh(&format!(
            "mount -o loop,errors=remount-ro {} {}",
            self.image.display(),
            self.path.display()
        ));
    }

    /// What the kernel does on a disk error under `errors=remount-ro`: the
    /// filesystem turns read-only at once, open files included.
    fn fail(&self) {
        let dev = sh(&format!("findmnt -n -o SOURCE {}", self.path.display()));
        let dev = dev.trim().trim_start_matches("/dev/");
        sh(&format!("echo 1 > /sys/fs/ext4/{dev}/trigger_fs_error"));
    }

    /// Unmount, check and mount again: the operator's repair. The image is
    /// copied first: other tests' namespaces (`ip netns exec` copies every
    /// mount) may still hold the failed filesystem, and mounting its image
    /// again would get the same read-only superblock back.
    fn repair(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let repaired = self.image.with_extension("repaired");
        sh(&format!(
            "cp --sparse=always {} {}",
            self.image.display(),
            repaired.display()
        ));
        let _ = std::process::Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&repaired)
            .output();
        self.image = repaired;
        self.remount();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// The lease database's filesystem turns read-only while pxed serves (a disk
/// error under `errors=remount-ro`, which no remount undoes): OFFERs go on,
/// ACKs stop with one clear error, HTTP and TFTP go on. After the operator's
/// repair (unmount, fsck, mount) the database is intact with every ACKed
/// lease (`lease_fsync = true`: with the default, leases acknowledged just
/// before a filesystem failure may be in the page cache only, see
/// docs/hardening.md), and a restarted pxed ACKs the waiting client.
#[test]
fn lease_filesystem_turning_read_only_while_serving() {
    if !privileged("lease filesystem read-only while serving")
        || !common::have_tool("mkfs.ext4", "lease filesystem read-only while serving")
    {
        return;
    }
    let lab = new_lab("frw");
    lab.cli.sh("ip addr add 10.77.0.2/24 dev vc");
    let dir = lab_config("leases/pxed-leases.sqlite", true);
    let mut fs = Ext4::mount(&dir.path().join("leases.img"), &dir.path().join("leases"));
    let db = dir.path().join("leases/pxed-leases.sqlite");
    let pxed = start(&lab, &dir);
    let mut acked: Vec<([u8; 6], Ipv4Addr)> = lab.client(|| {
        let s = socket(68);
        (1..=3)
            .map(|n| {
                (
                    mac(n),
                    offer_then_request(&s, mac(n), WAIT).expect("ACK").yiaddr(),
                )
            })
            .collect()
    });
    fs.fail();
    let (m4, ip4) = lab.client(|| {
        let s = socket(68);
        let d = packet(MessageType::Discover, mac(4), vec![]);
        let offer = ask(&s, &d, bcast(67), WAIT).expect("an OFFER");
        assert!(request(&s, mac(4), offer.yiaddr(), Duration::from_millis(1000)).is_none());
        http_and_tftp_answer();
        (mac(4), offer.yiaddr())
    });
    let log = pxed.wait_log("cannot store leases", Duration::from_secs(5));
    assert!(log.contains("read-only filesystem"), "{log}");
    drop(pxed);
    fs.repair();
    assert_acks_stored(&as_text(&acked), &db);
    let pxed = start(&lab, &dir);
    let ack = lab.client(|| request_until_acked(&socket(68), m4, ip4));
    acked.push((m4, ack.yiaddr()));
    drop(pxed);
    assert_acks_stored(&as_text(&acked), &db);
}

fn as_text(acks: &[([u8; 6], Ipv4Addr)]) -> Vec<(String, String)> {
    acks.iter()
        .map(|(m, ip)| (fmt_mac(m), ip.to_string()))
        .collect()
}

// --------------------------------------------------------------- assets ----

/// A sparse 80 MiB asset: above the size pxed reads into memory whole, so it
/// is read while it is sent.
fn sparse_asset(dir: &ConfigDir, name: &str) -> PathBuf {
    let path = dir.asset(name, b"");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(80 << 20)
        .unwrap();
    path
}

/// A boot file truncated in the middle of a TFTP transfer (a large file,
/// read while it is sent) ends that transfer with an ERROR within the chunk
/// already read, not with a silently short file or a transfer that waits out
/// its retries; one deleted before it is asked for is "file not found" at
/// once; the transfer slot is free again right away.
#[test]
fn tftp_file_truncated_or_deleted_while_serving() {
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"127.0.0.1:0\"",
        "[[rule]]\nname = \"default\"\nkernel = \"k\"\n",
    );
    let big = sparse_asset(&dir, "big.img");
    let small = dir.asset("small.bin", &[7u8; 1000]);
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.addr("tftp");

    let c = client();
    c.send_to(&rrq("big.img", &[("blksize", "1468")]), addr)
        .unwrap();
    let (p, from) = recv(&c);
    assert_eq!(opcode(&p), 6, "OACK");
    c.send_to(&ack(0), from).unwrap();
    for block in 1..=50u16 {
        let (p, _) = recv(&c);
        assert_eq!(opcode(&p), 3);
        assert_eq!(p.len(), 4 + 1468);
        if block == 50 {
            std::fs::File::options()
                .write(true)
                .open(&big)
                .unwrap()
                .set_len(10_000)
                .unwrap();
        }
        c.send_to(&ack(block), from).unwrap();
    }
    // Large files are read 64 KiB ahead (44 blocks): the blocks already read
    // may still go out, all full-sized, and then an ERROR, never a short
    // block that would end the transfer as a silently truncated file.
    let started = Instant::now();
    let mut block = 50u16;
    let p = loop {
        let (p, _) = recv(&c);
        if opcode(&p) != 3 {
            break p;
        }
        assert_eq!(p.len(), 4 + 1468, "a short block after the truncation");
        block += 1;
        assert!(block <= 50 + 45, "no ERROR within 64 KiB of the truncation");
        c.send_to(&ack(block), from).unwrap();
    };
    assert_eq!(opcode(&p), 5, "an ERROR after the truncation, got {p:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let log = pxed.wait_log("file changed while it was sent", Duration::from_secs(2));
    assert!(log.contains("outcome=\"failed\""), "{log}");

    std::fs::remove_file(&small).unwrap();
    let c = client();
    c.send_to(&rrq("small.bin", &[]), addr).unwrap();
    let (p, _) = recv(&c);
    assert_eq!(opcode(&p), 5);
    assert_eq!(u16::from_be_bytes([p[2], p[3]]), 1, "file not found");
    // The slots are free: a new transfer starts at once.
    dir.asset("small.bin", &[7u8; 1000]);
    let c = client();
    c.send_to(&rrq("small.bin", &[]), addr).unwrap();
    let (p, _) = recv(&c);
    assert_eq!(opcode(&p), 3);
}

/// A boot file truncated while it is sent over HTTP: the response ends early
/// and the connection closes (the client sees fewer bytes than the
/// Content-Length, an error curl and iPXE report), promptly; the server
/// answers the next request, and a deleted file is 404.
#[test]
fn http_file_truncated_while_serving() {
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"",
        "[[rule]]\nname = \"default\"\nkernel = \"k\"\n",
    );
    let big = sparse_asset(&dir, "big.img");
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /assets/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 1 << 20];
    let mut n = 0;
    while n < got.len() {
        n += s.read(&mut got[n..]).unwrap();
    }
    assert!(String::from_utf8_lossy(&got[..200]).contains("content-length: 83886080"));
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(0)
        .unwrap();
    let started = Instant::now();
    let mut total = n;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => total += k,
            Err(e) => panic!("the connection neither ended nor failed: {e}"),
        }
    }
    assert!(total < 80 << 20, "the whole file arrived");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let (head, _) = get(addr, "/ipxe?mac=52:54:00:00:00:01");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    std::fs::remove_file(&big).unwrap();
    let (head, _) = get(addr, "/assets/big.img");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

// ------------------------------------------------------------ templates ----

/// The template directory, then the config file, deleted while serving:
/// every reload is rejected with the reason, the last good config keeps
/// serving; restoring the files makes the next reload succeed, and edits in
/// the recreated template directory are picked up again without SIGHUP.
#[test]
fn deleted_templates_and_config_keep_the_last_good_one() {
    let rules =
        |gen: &str| format!("[[rule]]\nname = \"default\"\nkernel = \"k\"\nargs = \"{gen}\"\n");
    let dir = ConfigDir::new(
        "http_listen = \"127.0.0.1:0\"\ntftp_listen = \"\"",
        &rules("gen=1"),
    );
    let pxed = Pxed::start(&dir.config(), None);
    let addr = pxed.http();
    let script = || {
        let (head, body) = get(addr, "/ipxe?mac=52:54:00:00:00:01");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body
    };
    assert!(script().contains("gen=1"));
    let templates = dir.path().join("boot-templates");
    let saved = dir.path().join("saved-templates");
    sh(&format!(
        "cp -r {} {}",
        templates.display(),
        saved.display()
    ));

    std::fs::remove_dir_all(&templates).unwrap();
    let log = pxed.wait_log("cannot read the template directory", Duration::from_secs(5));
    assert!(log.contains("reload rejected"), "{log}");
    assert!(script().contains("gen=1"));
    pxed.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(script().contains("gen=1"));

    let config_text = std::fs::read_to_string(dir.config()).unwrap();
    std::fs::remove_file(dir.config()).unwrap();
    pxed.signal("HUP");
    pxed.wait_log("machines.toml:1:1: cannot read", Duration::from_secs(5));
    assert!(script().contains("gen=1"));

    // Restore: templates first, then the config with a change.
    sh(&format!(
        "cp -r {} {}",
        saved.display(),
        templates.display()
    ));
    std::fs::write(dir.config(), config_text.replace("gen=1", "gen=2")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !script().contains("gen=2") {
        assert!(
            Instant::now() < deadline,
            "the restored config was not loaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An edit inside the recreated directory reloads by itself.
    let linux = templates.join("linux.ipxe");
    let edited = std::fs::read_to_string(&linux)
        .unwrap()
        .replace("#!ipxe\n", "#!ipxe\necho restored-watch\n");
    let tmp = templates.join("linux.ipxe.new~");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, &linux).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !script().contains("restored-watch") {
        assert!(
            Instant::now() < deadline,
            "an edit in the recreated template directory was not picked up; log:\n{}",
            pxed.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
