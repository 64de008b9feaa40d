//! IPv6 netboot end to end, on a boot network with no IPv4 at all
//! (`Lab::ipv6_only`: br0 has fd97:e2e::1/64 and its link-local address):
//! pxed alone gives the machine everything, with its DHCPv6 (full mode),
//! its router advertisements (M and O set, the prefix on-link), its TFTP and
//! its HTTP. OVMF's own PXEv6 (PXEv4 off: it costs ~60 s there) fetches
//! `snponly.efi` over TFTP, iPXE asks DHCPv6 again and fetches `boot.ipxe`,
//! the machine's script and its kernel over HTTP; OVMF's HTTPv6 Boot fetches
//! `snponly.efi` over HTTP instead (BRIEF "IPv6 netboot").

use std::time::{Duration, Instant};

use super::common::lab::{self, Firmware, Guest, Lab, Machine};
use super::{boot_ovmf_on, ovmf_4m, setup_lab};

const PXE6_MAC: &str = "52:54:00:e2:e0:60";
const HTTP6_MAC: &str = "52:54:00:e2:e0:61";

/// Boots one OVMF guest on the IPv6-only lab; pxed's log, or `None` (skipped).
fn boot_v6(what: &str, firmware: Firmware, mac: &str, rule: &str) -> Option<String> {
    let started = Instant::now();
    let s = setup_lab(what, 1, Lab::ipv6_only, lab::dhcp_full6, "")?;
    boot_ovmf_on(s, started, what, firmware, mac, rule)
}

/// The log lines of `mac`'s DHCPv6 replies.
fn dhcp6_replies<'a>(log: &'a str, mac: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("dhcp6 reply") && l.contains(&format!("mac={mac}")))
        .collect()
}

/// OVMF's PXEv6: the firmware is handed `tftp://[fd97:e2e::1]/snponly.efi`
/// in the Advertise, fetches it over TFTP; iPXE (user class) gets the HTTP
/// script; both known by the MAC in their link-local address.
#[test]
fn uefi_pxe_over_ipv6_boots_the_machine_rule() {
    let Some(log) = boot_v6("e2e-pxe6", Firmware::UefiPxe6, PXE6_MAC, "uefi-pxe6") else {
        return;
    };
    let replies = dhcp6_replies(&log, PXE6_MAC);
    assert!(
        replies
            .iter()
            .any(|l| l.contains("outcome=\"advertise\"") && l.contains("snponly.efi")),
        "the firmware's Advertise did not name snponly.efi:\n{log}"
    );
    assert!(
        replies
            .iter()
            .any(|l| l.contains("http://[fd97:e2e::1]:8080/boot.ipxe")),
        "iPXE was not handed the script URL over DHCPv6:\n{log}"
    );
    let size = std::fs::metadata("/usr/lib/ipxe/snponly.efi").map_or(0, |m| m.len());
    assert!(
        log.lines().any(|l| l.contains("tftp transfer")
            && l.contains("snponly.efi")
            && l.contains(&format!("bytes={size} "))
            && l.contains("fd97:e2e::")),
        "snponly.efi was not sent over TFTP on IPv6:\n{log}"
    );
}

/// OVMF's HTTP Boot over IPv6: option 16 `HTTPClient` and the URL of
/// `snponly.efi` in the Advertise; the firmware fetches it over HTTP.
#[test]
fn uefi_http_boot_over_ipv6_boots_the_machine_rule() {
    let Some(log) = boot_v6("e2e-http6", Firmware::UefiHttp6, HTTP6_MAC, "uefi-http6") else {
        return;
    };
    let replies = dhcp6_replies(&log, HTTP6_MAC);
    assert!(
        replies.iter().any(|l| l.contains("outcome=\"advertise\"")
            && l.contains("http://[fd97:e2e::1]:8080/assets/snponly.efi")),
        "the firmware was not handed the loader's URL:\n{log}"
    );
    assert!(
        log.contains("file=/usr/lib/ipxe/snponly.efi"),
        "snponly.efi was not served over HTTP:\n{log}"
    );
}

/// Boots `firmware` (MAC `mac`) in the IPv6 proxy lab ([`lab::dhcp_proxy6`])
/// until pxed's log shows `fetched`; returns the log (`None`: skipped).
fn loader_through_proxy(
    what: &str,
    firmware: Firmware,
    mac: &str,
    fetched: impl Fn(&str) -> bool,
) -> Option<String> {
    let s = setup_lab(what, 1, Lab::ipv6_only, lab::dhcp_proxy6, "")?;
    let files = ovmf_4m(what)?;
    let machine = Machine {
        firmware,
        ..Machine::bios(what, mac, Some("UEFI Box"))
    };
    let _guest = Guest::boot(&s.lab, 0, &machine, s.accel, Some((&files.0, &files.1)));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut log = s.pxed.log();
    while !fetched(&log) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        log = s.pxed.log();
    }
    assert!(
        fetched(&log),
        "{what}: the loader was not fetched through the proxy:\n{log}"
    );
    Some(log)
}

/// DHCPv6 proxy mode beside another DHCPv6 server (docs/decisions.md,
/// "DHCPv6 proxy mode"): dnsmasq hands out the address and the
/// advertisements, pxed (proxy mode) an Advertise with the boot file URL,
/// vendor class `PXEClient` and no address. OVMF's PXEv6 takes dnsmasq's
/// address, asks pxed for the boot file on port 4011 and fetches
/// `snponly.efi` over TFTP. The machine does not boot further: iPXE's
/// stateful DHCPv6 takes only an Advertise with an address (dnsmasq's), so
/// it never gets its script from a proxy; not waited for here.
#[test]
fn uefi_pxe_over_ipv6_gets_its_loader_through_a_dhcpv6_proxy() {
    let size = std::fs::metadata("/usr/lib/ipxe/snponly.efi").map_or(0, |m| m.len());
    let fetched = |log: &str| {
        log.lines().any(|l| {
            l.contains("tftp transfer")
                && l.contains("snponly.efi")
                && l.contains(&format!("bytes={size} "))
                && l.contains("outcome=\"ok\"")
        })
    };
    let Some(log) = loader_through_proxy("e2e-pxe6p", Firmware::UefiPxe6, PXE6_MAC, fetched) else {
        return;
    };
    let replies = dhcp6_replies(&log, PXE6_MAC);
    assert!(
        replies.iter().any(|l| l.contains("outcome=\"advertise\"")
            && l.contains("addrs=[]")
            && l.contains("snponly.efi")),
        "no proxy Advertise naming snponly.efi:\n{log}"
    );
    assert!(
        replies.iter().any(|l| l.contains("kind=\"request\"")
            && l.contains("snponly.efi")
            && l.contains("]:4011 ")),
        "the firmware's Request on port 4011 was not answered:\n{log}"
    );
}

/// OVMF's HTTPv6 Boot in the same proxy lab: pxed's Advertise (the loader's
/// URL, vendor class `HTTPClient`, no address) beside dnsmasq's; the
/// firmware takes dnsmasq's address and fetches `snponly.efi` from pxed
/// over HTTP (no port 4011 for HTTP Boot).
#[test]
fn uefi_http_boot_over_ipv6_gets_its_loader_through_a_dhcpv6_proxy() {
    let fetched = |log: &str| log.contains("file=/usr/lib/ipxe/snponly.efi");
    let Some(log) = loader_through_proxy("e2e-http6p", Firmware::UefiHttp6, HTTP6_MAC, fetched)
    else {
        return;
    };
    assert!(
        dhcp6_replies(&log, HTTP6_MAC)
            .iter()
            .any(|l| l.contains("outcome=\"advertise\"")
                && l.contains("addrs=[]")
                && l.contains("http://[fd97:e2e::1]:8080/assets/snponly.efi")),
        "no proxy Advertise naming the loader's URL:\n{log}"
    );
}
