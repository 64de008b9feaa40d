#!/bin/bash
# Regenerates the fuzz seed corpora under fuzz/corpus/<target>/ from real
# clients (not a test; run it by hand, as root, then commit what changed):
#
#   dhcp    DHCP requests captured with tshark in the end-to-end lab (a
#           namespace with a bridge, pxed in full DHCP mode, QEMU guests):
#             bios-rom-*      the BIOS e1000 option ROM (QEMU's, which is iPXE)
#             undionly-*      undionly.kpxe, chained by that ROM over TFTP
#                             (a second iPXE, with a PXE UNDI stack under it)
#             uefi-rom-*      the UEFI e1000 ROM (iPXE EFI) under OVMF
#             pxelinux-*      guests that go on to lpxelinux/pxelinux
#           plus hand-built packets (pxe-rom-*, relay-*, ...; see
#           dhcp_by_hand below): no legacy, non-iPXE PXE ROM exists in the
#           lab, so these follow the option set of a PXE 2.1 ROM (Intel Boot
#           Agent style: 53, 57, 55, 97, 94, 93, 60) like tests/dhcp.rs does.
#   tftp    RRQs from those iPXEs (undionly.kpxe), from classic pxelinux.0
#           (ldlinux.c32, pxelinux.cfg/<uuid>, 01-<mac>, C0A8…, default), from
#           the tftp-hpa and atftp clients, and their ACK/ERROR packets.
#   http    request heads from iPXE (boot.ipxe, /ipxe?product=…) and from
#           lpxelinux (HTTP/1.0, pxelinux.cfg/01-<mac>?…).
#   config  the shipped machines.toml, fuzz/fixture/machines.toml, every
#           config the integration tests write (PXED_SAVE_CONFIGS), and the
#           TOML examples in docs/.
#
# Usage (root): bench/fuzz-seeds.sh            (about 2-4 minutes under TCG)
# Environment:  ACCEL=tcg|kvm (default tcg), TIMEOUT per guest (default 180 s).
# Uses only a network namespace it creates; every process it starts is
# stopped by PID on exit.
set -euo pipefail

ACCEL=${ACCEL:-tcg}
TIMEOUT=${TIMEOUT:-180}
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
CORPUS=$REPO/fuzz/corpus
NS=pxed-seeds-$$
IP=10.97.0.1

[ "$(id -u)" = 0 ] || { echo "bench/fuzz-seeds.sh: needs root (network namespaces, taps)" >&2; exit 1; }
for tool in qemu-system-x86_64 dnsmasq tshark ip tftp atftp perl; do
    command -v "$tool" >/dev/null || { echo "bench/fuzz-seeds.sh: $tool is not installed" >&2; exit 1; }
done
OVMF=$(ls /usr/share/ovmf/OVMF.fd /usr/share/qemu/OVMF.fd 2>/dev/null | head -1 || true)
EFI_ROM=/usr/lib/ipxe/qemu/efi-e1000.rom

(cd "$REPO" && cargo build -q --bin pxed)
PXED_BIN=$REPO/target/debug/pxed

WORK=$(mktemp -d /tmp/pxed-seeds.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The lab of tests/common/lab.rs: bridge, one tap, IPv6 RAs (else iPXE waits
# ~15 s for IPv6 autoconfiguration).
bridge_lab "$NS" "$IP/16" fd97::1/64
ip netns exec "$NS" dnsmasq --keep-in-foreground --log-facility=- --conf-file=/dev/null --port=0 \
    --interface=br0 --bind-interfaces --enable-ra --dhcp-range=fd97::,ra-only,64 \
    --leasefile-ro --pid-file= 2>/dev/null &
PIDS+=($!)

# pxed: full DHCP; every iPXE's script chains undionly.kpxe over TFTP (so the
# ROM's iPXE fetches it and a second iPXE does DHCP again), except two MACs
# that go on to lpxelinux over HTTP and to classic pxelinux over TFTP.
mkdir -p "$WORK/assets" "$WORK/templates"
cp "$REPO"/boot-templates/* "$WORK/templates/"
echo kernel > "$WORK/assets/vmlinuz"
printf '#!ipxe\nchain tftp://${next-server}/undionly.kpxe\n' > "$WORK/templates/seed-undionly.ipxe"
printf '#!ipxe\nset 210:string /\nchain tftp://${next-server}/pxelinux.0\n' > "$WORK/templates/seed-pxelinux.ipxe"
cat > "$WORK/machines.toml" <<EOF
[server]
http_listen = "$IP:8080"
tftp_listen = "$IP:69"
admin_listen = ""
assets_dir = "assets"
templates_dir = "templates"
search_paths = ["/usr/lib/ipxe", "/usr/lib/PXELINUX", "/usr/lib/syslinux/modules/bios"]

[defaults]
kernel = "vmlinuz"

[[rule]]
name = "chain-undionly"
template = "seed-undionly.ipxe"

[[rule]]
name = "lpxelinux-http"
match = { mac = "52:54:00:5e:ed:02" }
boot = "pxelinux"

[[rule]]
name = "pxelinux-tftp"
match = { mac = "52:54:00:5e:ed:03" }
template = "seed-pxelinux.ipxe"

[dhcp]
mode = "full"
interfaces = ["br0"]

[[dhcp.subnet]]
network = "10.97.0.0/16"
pool = "10.97.1.10-10.97.1.250"
router = "$IP"
EOF
"$PXED_BIN" check --config "$WORK/machines.toml" >/dev/null
PXED_LOG=info ip netns exec "$NS" "$PXED_BIN" serve --config "$WORK/machines.toml" 2>"$WORK/pxed.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "dhcp listening" "$WORK/pxed.log" && break; sleep 0.1; done
grep -q "dhcp listening" "$WORK/pxed.log" || { cat "$WORK/pxed.log" >&2; exit 1; }

# Captures one scenario into $WORK/<name>.pcap: tshark on every interface of
# the namespace (br0 for guests, lo for the TFTP clients).
capture_start() {
    ip netns exec "$NS" tshark -q -i any -f "udp or tcp port 8080" -w "$WORK/$1.pcap" 2>/dev/null &
    TSHARK=$!
    PIDS+=("$TSHARK")
    for _ in $(seq 100); do [ -s "$WORK/$1.pcap" ] && break; sleep 0.1; done
    sleep 0.5
}
capture_stop() {
    sleep 0.5
    kill "$TSHARK" 2>/dev/null || true
    wait "$TSHARK" 2>/dev/null || true
}

# Boots a guest until pxed's log has $3 lines matching $2 after it started.
guest() {
    local name=$1 pattern=$2 count=$3 mac=$4; shift 4
    local before qpid deadline
    before=$(wc -l < "$WORK/pxed.log")
    capture_start "$name"
    ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -nographic -m 512 -no-reboot -boot n \
        -smbios type=1,product='Express5800/i120Ra-e1 [N8100-1482Y]',serial=SN-42-0001,manufacturer=NEC \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no "$@" \
        -device "e1000,netdev=n0,mac=$mac${ROMFILE:+,romfile=$ROMFILE}" </dev/null >"$WORK/$name.console" 2>&1 &
    qpid=$!
    PIDS+=("$qpid")
    deadline=$((SECONDS + TIMEOUT))
    until [ "$(tail -n +"$((before + 1))" "$WORK/pxed.log" | grep -c -- "$pattern")" -ge "$count" ]; do
        if ! kill -0 "$qpid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "bench/fuzz-seeds.sh: guest $name did not get to '$pattern' x$count; console:" >&2
            tail -c 1500 "$WORK/$name.console" >&2
            kill "$qpid" 2>/dev/null || true
            capture_stop
            return 1
        fi
        sleep 0.2
    done
    sleep 1
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    capture_stop
    echo "  $name: captured"
}

# Writes the UDP or TCP payload of each packet of capture $1 that matches
# filter $2 as a seed file $CORPUS/$3/$4-<n>-<label>, <label> made of the
# fields named after that.
extract() {
    local pcap=$1 filter=$2 target=$3 prefix=$4 payload=udp.payload field fields=(); shift 4
    [ "$target" = http ] && payload=tcp.payload
    for field in "$payload" "$@"; do fields+=(-e "$field"); done
    mkdir -p "$CORPUS/$target"
    tshark -r "$WORK/$pcap.pcap" -Y "$filter" -T fields -E separator=/t "${fields[@]}" 2>/dev/null |
        perl -ne '
            BEGIN { ($dir, $prefix) = @ARGV[0, 1]; @ARGV = (); }
            chomp; my ($hex, @label) = split /\t/;
            next unless $hex;
            $hex =~ s/[^0-9a-fA-F]//g;
            my %dhcp = (1 => "discover", 3 => "request", 4 => "decline", 7 => "release", 8 => "inform");
            @label = map { $dir =~ m{/dhcp$} && exists $dhcp{$_} ? $dhcp{$_} : $_ } @label;
            my $label = join("-", grep { length } @label);
            $label =~ s/[^A-Za-z0-9.-]+/_/g;
            $n++;
            my $name = sprintf("%s/%s-%02d%s", $dir, $prefix, $n, length $label ? "-$label" : "");
            open(my $f, ">", $name) or die "$name: $!";
            binmode $f; print $f pack("H*", $hex); close $f;
        ' "$CORPUS/$target" "$prefix"
}

echo "capturing (accel $ACCEL; each guest takes 20-60 s under TCG)"
rm -rf "$CORPUS/dhcp" "$CORPUS/tftp" "$CORPUS/http" "$CORPUS/config"
mkdir -p "$CORPUS/dhcp" "$CORPUS/tftp" "$CORPUS/http" "$CORPUS/config"

# 1. BIOS ROM iPXE → boot.ipxe → /ipxe → TFTP undionly.kpxe → undionly's own
#    DHCP → boot.ipxe → /ipxe (the second "ipxe script rendered").
guest bios "ipxe script rendered" 2 52:54:00:5e:ed:01
# DHCP before the first RRQ came from the ROM, after it from undionly.kpxe.
tshark -r "$WORK/bios.pcap" -Y "udp.dstport == 67 || tftp.opcode == 1" -T fields -E separator=/t \
    -e tftp.opcode -e dhcp.option.dhcp -e udp.payload 2>/dev/null |
    perl -ne '
        BEGIN { ($dir) = @ARGV; @ARGV = (); $who = "bios-rom"; }
        chomp; my ($tftp, $type, $hex) = split /\t/;
        if ($tftp) { $who = "undionly"; next; }
        my %name = (1 => "discover", 3 => "request", 4 => "decline", 7 => "release", 8 => "inform");
        $n{$who}++;
        my $name = sprintf("%s/%s-%02d-%s", $dir, $who, $n{$who}, $name{$type} // "type$type");
        open(my $f, ">", $name) or die; binmode $f; print $f pack("H*", $hex); close $f;
    ' "$CORPUS/dhcp"
extract bios "tftp && ip.src != $IP" tftp undionly-client tftp.opcode tftp.source_file
extract bios "tcp.dstport == 8080 && tcp.len > 0" http ipxe-bios

# 2. lpxelinux chained over HTTP: its config request over HTTP/1.0.
guest lpxelinux "pxelinux config rendered" 1 52:54:00:5e:ed:02
extract lpxelinux "udp.dstport == 67" dhcp pxelinux-http-rom dhcp.option.dhcp
extract lpxelinux "tcp.dstport == 8080 && tcp.len > 0" http lpxelinux

# 3. Classic pxelinux.0 over TFTP: ldlinux.c32 and the config search.
guest pxelinux "pxelinux.cfg/01-52-54-00-5e-ed-03" 1 52:54:00:5e:ed:03
extract pxelinux "tftp.opcode == 1" tftp pxelinux-rrq tftp.source_file
extract pxelinux "tftp.opcode == 5 && ip.src != $IP" tftp pxelinux-error

# 4. UEFI: OVMF with the iPXE EFI ROM (option 93 = 7).
if [ -n "$OVMF" ] && [ -f "$EFI_ROM" ]; then
    ROMFILE=$EFI_ROM guest uefi "ipxe script rendered" 1 52:54:00:5e:ed:04 -bios "$OVMF"
    extract uefi "udp.dstport == 67" dhcp uefi-rom dhcp.option.dhcp
    extract uefi "tcp.dstport == 8080 && tcp.len > 0" http ipxe-uefi
else
    echo "  uefi: skipped (no OVMF or $EFI_ROM)"
fi

# 5. The TFTP clients the tests use, with the options they send.
capture_start clients
ip netns exec "$NS" sh -c "cd $WORK && tftp $IP -m binary -c get undionly.kpxe /dev/null" >/dev/null
ip netns exec "$NS" atftp --option "tsize 0" --option "blksize 1468" --option "windowsize 16" \
    -g -r undionly.kpxe -l /dev/null "$IP" >/dev/null 2>&1 || true
ip netns exec "$NS" atftp -g -r missing.bin -l /dev/null "$IP" >/dev/null 2>&1 || true
capture_stop
extract clients "tftp.opcode == 1" tftp client-rrq tftp.source_file
echo "  tftp clients: captured"

# Only the first few ACKs of each capture: the rest differ in block number only.
find "$CORPUS/tftp" -name '*-4' -o -name '*-4-*' | sort | tail -n +5 | xargs -r rm -f

# Hand-built DHCP packets for what the lab has no client for.
dhcp_by_hand() {
    perl - "$CORPUS/dhcp" <<'PERL'
use strict;
my $dir = shift;
# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr(16) sname(64) file(128) cookie options
sub msg {
    my (%a) = @_;
    my $p = pack("CCCCNnn", 1, 1, 6, $a{hops} // 0, $a{xid} // 0x1a2b3c4d, 4, $a{flags} // 0x8000);
    $p .= pack("C4", @{ $a{ciaddr} // [0,0,0,0] }) . pack("C4", 0,0,0,0) . pack("C4", 0,0,0,0);
    $p .= pack("C4", @{ $a{giaddr} // [0,0,0,0] });
    $p .= pack("C6", @{ $a{mac} }) . ("\0" x 10) . ("\0" x 64) . ("\0" x 128);
    $p .= pack("C4", 99, 130, 83, 99);
    for my $o (@{ $a{opts} }) { my ($code, $val) = @$o; $p .= pack("CC", $code, length $val) . $val; }
    return $p . "\xff";
}
sub put { my ($name, $bytes) = @_; open(my $f, ">", "$dir/$name") or die; binmode $f; print $f $bytes; close $f; }
my @mac = (0x00, 0x1b, 0x21, 0x3a, 0x4b, 0x5c);
my $guid = "\0" . pack("H*", "4c4c4544003536108048b4c04f4e5931");
my @pxe = (
    [57, pack("n", 1260)],
    [55, pack("C*", 1,2,3,4,5,6,11,12,13,15,16,17,18,22,23,28,40,41,42,43,50,51,54,58,59,60,66,67,97,128..135)],
    [97, $guid], [94, pack("C3", 1, 2, 1)], [93, pack("n", 0)],
    [60, "PXEClient:Arch:00000:UNDI:002001"],
);
put("pxe-rom-discover", msg(mac => \@mac, opts => [[53, "\x01"], @pxe]));
put("pxe-rom-request", msg(mac => \@mac, opts => [[53, "\x03"], [50, pack("C4", 10,97,1,10)], [54, pack("C4", 10,97,0,1)], @pxe]));
# The ProxyDHCP boot-server request on 4011: ciaddr set, option 43 asks for boot item 0.
put("pxe-rom-proxy-request", msg(mac => \@mac, ciaddr => [10,97,1,10], flags => 0,
    opts => [[53, "\x03"], @pxe, [43, pack("C*", 71, 4, 0, 0, 0, 0, 255)]]));
# UEFI PXE (arch 7) and UEFI HTTP Boot (arch 16, HTTPClient).
put("pxe-efi-discover", msg(mac => \@mac, opts => [[53, "\x01"], [93, pack("n", 7)], [97, $guid],
    [60, "PXEClient:Arch:00007:UNDI:003016"]]));
put("http-boot-discover", msg(mac => \@mac, opts => [[53, "\x01"], [93, pack("n", 16)],
    [60, "HTTPClient:Arch:00016:UNDI:003001"]]));
# A relayed request (giaddr, option 82 circuit and remote id) from another subnet.
put("relay-discover", msg(mac => \@mac, hops => 1, giaddr => [10,98,0,1], flags => 0,
    opts => [[53, "\x01"], @pxe, [82, pack("CCa*CCa*", 1, 6, "eth0/1", 2, 4, "sw01")]]));
# The reserved machine renewing (unicast, ciaddr), releasing, declining, informing.
my @db1 = (0x52, 0x54, 0x00, 0x12, 0x34, 0x56);
put("renew-request", msg(mac => \@db1, ciaddr => [10,97,0,21], flags => 0, opts => [[53, "\x03"], [77, "iPXE"]]));
put("init-reboot-request", msg(mac => \@db1, opts => [[53, "\x03"], [50, pack("C4", 10,97,0,21)]]));
put("release", msg(mac => \@db1, ciaddr => [10,97,0,21], flags => 0, opts => [[53, "\x07"], [54, pack("C4", 10,97,0,1)]]));
put("decline", msg(mac => [0x52,0x54,0,0x12,0x34,0x58], opts => [[53, "\x04"], [50, pack("C4", 10,97,1,10)], [54, pack("C4", 10,97,0,1)]]));
put("inform", msg(mac => \@db1, ciaddr => [10,97,0,21], flags => 0, opts => [[53, "\x08"], [55, pack("C*", 1, 3, 6, 66, 67)]]));
# RFC 3004 user class (length-prefixed "iPXE") and a client identifier.
put("rfc3004-user-class-discover", msg(mac => [0x52,0x54,0,0xaa,0,9],
    opts => [[53, "\x01"], [77, "\x04iPXE"], [61, pack("C*", 1, 0x52,0x54,0,0xaa,0,9)], [93, pack("n", 9)]]));
PERL
}
dhcp_by_hand
echo "  dhcp: hand-built packets written"

# HTTP requests no lab client sent: percent-encoded MAC colons, the seed CGI's
# type=, a HEAD and a Range request for an asset, an HTTP/1.0 request without Host.
printf 'GET /ipxe?type=Express5800%%2Fi120Ra-e1%%20%%5BN8100-1482Y%%5D&mac=52%%3A54%%3A00%%3A12%%3A34%%3A56 HTTP/1.1\r\nHost: 10.97.0.1:8080\r\n\r\n' > "$CORPUS/http/cgi-style-query"
printf 'HEAD /assets/undionly.kpxe HTTP/1.1\r\nHost: 10.97.0.1\r\n\r\nGET /assets/debian/vmlinuz HTTP/1.1\r\nHost: 10.97.0.1\r\nRange: bytes=2-\r\n\r\n' > "$CORPUS/http/head-and-range"
printf 'GET /pxelinux/pxelinux.cfg/01-52-54-00-12-34-99 HTTP/1.0\r\n\r\n' > "$CORPUS/http/http10-no-host"

# Configs: shipped, fixture, docs, and whatever the tests write.
cp "$REPO/machines.toml" "$CORPUS/config/shipped-machines.toml"
cp "$REPO/fuzz/fixture/machines.toml" "$CORPUS/config/fuzz-fixture.toml"
cp "$WORK/machines.toml" "$CORPUS/config/seeds-lab.toml"
for doc in "$REPO"/docs/*.md; do
    awk -v out="$CORPUS/config/doc-$(basename "$doc" .md)" '
        /^```toml/ { n++; f = sprintf("%s-%02d.toml", out, n); inside = 1; next }
        /^```/ { inside = 0; next }
        inside { print > f }' "$doc"
done
echo "  configs written by the tests (about a minute)..."
mkdir -p "$WORK/configs"
(cd "$REPO" && PXED_SAVE_CONFIGS="$WORK/configs" cargo test -q --test check --test reload \
    --test http --test serve --test tftp >/dev/null 2>&1) || echo "  (some tests failed; their configs are kept anyway)"
cp "$WORK"/configs/*.toml "$CORPUS/config/" 2>/dev/null || true

# Each packet was seen twice (on the tap and on the bridge): keep one copy
# of every distinct seed.
for t in dhcp tftp http config; do
    (cd "$CORPUS/$t" && md5sum -- * | sort -k1,1 -s | awk 'seen[$1]++ { print $2 }' | xargs -r rm -f)
done
for t in dhcp tftp http config; do
    printf '%-7s %3d seeds, %6d bytes\n' "$t" "$(ls "$CORPUS/$t" | wc -l)" "$(cat "$CORPUS/$t"/* | wc -c)"
done
