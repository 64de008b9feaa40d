#!/bin/bash
# Benchmark (not a test): power-on → the payload's `/init` marker
# (`PXED-E2E-BOOTED` on the serial console) of a QEMU BIOS iPXE guest, for three
# boot servers in one run, taking turns boot by boot so that load drift hits
# all of them:
#   pxed-off   pxed alone (full DHCP + HTTP), [ipv6_ra] off: no RA on the segment
#   pxed-on    the same with [ipv6_ra] enabled = true
#   reference  dnsmasq (DHCP, option 175.176 like pxed) + a static HTTP server
#              (nginx, else busybox httpd) serving the same kernel, initrd and
#              kernel command line from a static iPXE script; no RA
# Prints every boot with its phases, the medians, the two ratios against the
# reference (issue 8's goals: on <= 0.35, off <= 1.0) and the load average.
#
# Phases, from the time each console line arrived:
#   firmware  QEMU start -> iPXE starts "Configuring (net0 …)"
#   ifconf    "Configuring" -> its "ok" (DHCP, and the IPv6 autoconfiguration wait)
#   files     -> initrd loaded (boot.ipxe, the script, kernel, initrd over HTTP)
#   kernel    -> /init's marker
#
# Usage (root): bench/boot.sh [RUNS]           (default 5 boots per server)
# Environment:  ACCEL=tcg|kvm (default tcg), NIC=e1000|virtio-net-pci (the guest NIC,
#               default e1000 as in the e2e lab), PXED_BIN (default
#               target/release/pxed, built if missing), TIMEOUT per boot in
#               seconds (default 300), KEEP=1 keeps the consoles (lines stamped
#               with arrival times) and server logs (pxed at debug for DHCP and
#               RA) in the printed directory.
# Uses only a network namespace it creates (10.97.0.1/16 on a bridge); every
# process it starts is stopped by PID. Guests and servers run at nice -10
# (all three configurations alike): under TCG a boot is CPU-bound, and other
# work on the machine would otherwise dominate the kernel phase.
set -euo pipefail

PRIO=(nice -n -10)
RUNS=${1:-5}
ACCEL=${ACCEL:-tcg}
NIC=${NIC:-e1000}
TIMEOUT=${TIMEOUT:-300}
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
PXED_BIN=${PXED_BIN:-$REPO/target/release/pxed}
NS=pxed-bench-$$
IP=10.97.0.1
MARKER=PXED-E2E-BOOTED
CONFIGS=(pxed-off pxed-on reference)
declare -A MAC=([pxed-off]=52:54:00:be:00:01 [pxed-on]=52:54:00:be:00:02 [reference]=52:54:00:be:00:03)
declare -A RULE=([pxed-off]=bench [pxed-on]=bench [reference]=reference)

[ "$(id -u)" = 0 ] || { echo "bench/boot.sh: needs root (network namespaces, taps)" >&2; exit 1; }
for tool in qemu-system-x86_64 dnsmasq ip busybox; do
    command -v "$tool" >/dev/null || { echo "bench/boot.sh: $tool is not installed" >&2; exit 1; }
done

if [ ! -x "$PXED_BIN" ]; then
    (cd "$REPO" && cargo build --release --bin pxed)
fi
PAYLOAD=$("$REPO/tests/lab/payload.sh" "$REPO/target/e2e-payload")

WORK=$(mktemp -d /tmp/pxed-bench.XXXXXX)
PIDS=()      # everything started, stopped on exit
SERVERS=()   # the DHCP server of the boot in progress
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
    if [ "${KEEP:-}" = 1 ]; then
        echo "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# The lab of tests/common/lab.rs: a bridge with one tap, no DAD, and no IPv6
# router of any kind (pxed-on's responder is the only RA source, when it runs).
bridge_lab "$NS" "$IP/16"

# pxed's two configs: the shipped templates, the payload on the search path.
mkdir -p "$WORK/assets"
for c in pxed-off pxed-on; do
    mkdir -p "$WORK/$c"
    cat > "$WORK/$c/machines.toml" <<EOF
[server]
http_listen = "$IP:8080"
tftp_listen = ""
admin_listen = ""
assets_dir = "$WORK/assets"
templates_dir = "$REPO/boot-templates"
search_paths = ["$PAYLOAD"]

[dhcp]
mode = "full"
interfaces = ["br0"]
[[dhcp.subnet]]
network = "10.97.0.0/16"
pool = "10.97.1.10-10.97.1.250"
router = "$IP"

[defaults]
kernel = "vmlinuz"
initrd = "initrd.gz"
console = { port = "ttyS0", baud = 115200 }

[[rule]]
name = "bench"
args = "quiet no_timer_check panic=-1 pxed.rule=bench"
EOF
done
printf '\n[ipv6_ra]\nenabled = true\n' >> "$WORK/pxed-on/machines.toml"
for c in pxed-off pxed-on; do
    "$PXED_BIN" check --config "$WORK/$c/machines.toml" >/dev/null 2>&1 ||
        { "$PXED_BIN" check --config "$WORK/$c/machines.toml"; exit 1; }
done

# The reference's HTTP side: the same files and the command line pxed renders,
# one static script. It runs throughout (it is not a DHCP server).
mkdir -p "$WORK/www"
ln "$PAYLOAD/vmlinuz" "$WORK/www/vmlinuz" 2>/dev/null || cp "$PAYLOAD/vmlinuz" "$WORK/www/vmlinuz"
ln "$PAYLOAD/initrd.gz" "$WORK/www/initrd.gz" 2>/dev/null || cp "$PAYLOAD/initrd.gz" "$WORK/www/initrd.gz"
cat > "$WORK/www/boot.ipxe" <<EOF
#!ipxe
kernel http://$IP:8081/vmlinuz initrd=initrd.gz quiet no_timer_check panic=-1 pxed.rule=reference console=ttyS0,115200n8
initrd http://$IP:8081/initrd.gz
boot
EOF
chmod -R a+rX "$WORK"
if command -v nginx >/dev/null; then
    REF_HTTP=nginx
    mkdir -p "$WORK/nginx"
    cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    default_type application/octet-stream;
    sendfile on;
    server { listen $IP:8081; root $WORK/www; }
}
EOF
    "${PRIO[@]}" ip netns exec "$NS" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' &
    PIDS+=($!)
else
    REF_HTTP="busybox httpd"
    "${PRIO[@]}" ip netns exec "$NS" busybox httpd -f -p "$IP:8081" -h "$WORK/www" &
    PIDS+=($!)
fi

# Waits up to 20 s for `cmd...` to succeed.
wait_for() {
    local _
    for _ in $(seq 200); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "bench/boot.sh: timed out waiting for: $*" >&2
    return 1
}
wait_for ip netns exec "$NS" busybox wget -q -O /dev/null "http://$IP:8081/boot.ipxe"

# Starts the DHCP side of configuration $1, logging to $2, and waits until it answers.
start_servers() {
    local c=$1 log=$2
    : > "$log"
    case $c in
    pxed-*)
        PXED_LOG=info,pxed::ra=debug,pxed::dhcp=debug "${PRIO[@]}" ip netns exec "$NS" "$PXED_BIN" serve --config "$WORK/$c/machines.toml" 2>"$log" &
        SERVERS=($!)
        wait_for grep -q "dhcp listening" "$log"
        wait_for ip netns exec "$NS" busybox wget -q -O /dev/null "http://$IP:8080/boot.ipxe"
        ;;
    reference)
        "${PRIO[@]}" ip netns exec "$NS" dnsmasq --keep-in-foreground --log-facility="$log" \
            --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces \
            --dhcp-range=10.97.1.1,10.97.1.254,255.255.0.0,10m --dhcp-authoritative --no-ping \
            --pid-file= --leasefile-ro --dhcp-option=tag:ipxe,encap:175,176,1b \
            --dhcp-userclass=set:ipxe,iPXE --dhcp-boot=tag:ipxe,"http://$IP:8081/boot.ipxe" &
        SERVERS=($!)
        wait_for grep -q "DHCP, sockets bound" "$log"
        ;;
    esac
    PIDS+=("${SERVERS[@]}")
}

stop_servers() {
    local pid
    for pid in "${SERVERS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVERS=()
}

# Prefixes every console line with the time it arrived ($EPOCHREALTIME).
stamp() {
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done
}

# One boot of configuration $1 into console log $2 (server log $3); sets
# RESULT to "total firmware ifconf files kernel" in seconds.
boot_once() {
    local c=$1 log=$2 server_log=$3
    local start qpid
    : > "$log"
    start_servers "$c" "$server_log"
    start=$EPOCHREALTIME
    "${PRIO[@]}" ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -nographic -m 512 -no-reboot -boot n \
        -smbios type=1,product='Express5800/i120Ra-e1 [N8100-1482Y]' \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device "$NIC",netdev=n0,mac="${MAC[$c]}" </dev/null > >(stamp >"$log") 2>&1 &
    qpid=$!
    PIDS+=("$qpid")
    local deadline=$((SECONDS + TIMEOUT))
    while ! grep -qa "$MARKER" "$log"; do
        if ! kill -0 "$qpid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            kill "$qpid" 2>/dev/null || true
            wait "$qpid" 2>/dev/null || true
            stop_servers
            echo "bench/boot.sh: $c: no marker; console in $log:" >&2
            tail -c 2000 "$log" >&2
            return 1
        fi
        sleep 0.05
    done
    # The guest powers off by itself right after the marker.
    for _ in $(seq 200); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    stop_servers
    grep -qa "pxed.rule=${RULE[$c]}" "$log" || { echo "bench/boot.sh: $c booted the wrong script" >&2; return 1; }
    if [ "$c" = pxed-on ]; then
        grep -q "router advertisement sent.*mac=${MAC[$c]}" "$server_log" ||
            { echo "bench/boot.sh: pxed-on sent no advertisement to the guest" >&2; return 1; }
    fi
    RESULT=$(awk -v s="$start" -v m="$MARKER" '
        /Configuring \(net0/ && !cs { cs = prev; ce = $1 }
        /initrd\.gz\.\.\..*ok/ && !f { f = $1 }
        index($0, m) && !k { k = $1 }
        { prev = $1 }
        END { printf "%.2f %.2f %.2f %.2f %.2f\n", k - s, cs - s, ce - cs, f - ce, k - f }' "$log")
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "boot benchmark: $RUNS boots per server, accel $ACCEL, NIC $NIC, $(nproc) CPUs, payload $(cat "$PAYLOAD/kernel-package"), reference dnsmasq + $REF_HTTP"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "seconds: total (firmware + ifconf + files + kernel)"
for c in "${CONFIGS[@]}"; do : > "$WORK/$c.times"; done
: > "$WORK/ratios"
for i in $(seq "$RUNS"); do
    line="run $i:"
    declare -A T=()
    for c in "${CONFIGS[@]}"; do
        boot_once "$c" "$WORK/console-$c-$i.log" "$WORK/server-$c-$i.log"
        read -r total fw ifc files kern <<< "$RESULT"
        echo "$total $fw $ifc $files $kern" >> "$WORK/$c.times"
        T[$c]=$total
        line+=" $c $total ($fw + $ifc + $files + $kern) |"
    done
    # Paired ratios: the three boots of a run saw about the same load.
    read -r on_r off_r < <(awk -v on="${T[pxed-on]}" -v off="${T[pxed-off]}" -v ref="${T[reference]}" \
        'BEGIN { printf "%.3f %.3f\n", on / ref, off / ref }')
    echo "$on_r $off_r" >> "$WORK/ratios"
    echo "$line on/ref $on_r off/ref $off_r | load $(cut -d' ' -f1 /proc/loadavg)"
done
declare -A MED
for c in "${CONFIGS[@]}"; do
    for col in 1 2 3 4 5; do
        MED[$c.$col]=$(awk -v c="$col" '{ print $c }' "$WORK/$c.times" | median)
    done
    echo "median $c: total ${MED[$c.1]} s (firmware ${MED[$c.2]}, ifconf ${MED[$c.3]}, files ${MED[$c.4]}, kernel ${MED[$c.5]})"
done
awk -v on="${MED[pxed-on.1]}" -v off="${MED[pxed-off.1]}" -v ref="${MED[reference.1]}" 'BEGIN {
    printf "ratio of medians: pxed-on/reference %.2f (goal <= 0.35), pxed-off/reference %.2f (goal <= 1.00)\n", on / ref, off / ref }'
echo "median of per-run ratios: pxed-on/reference $(awk '{ print $1 }' "$WORK/ratios" | median), pxed-off/reference $(awk '{ print $2 }' "$WORK/ratios" | median)"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
