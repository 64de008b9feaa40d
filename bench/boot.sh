#!/bin/bash
# Benchmark (not a test): time end-to-end scenario 1, power-on → the payload's
# `PXED-E2E-BOOTED` marker on the serial console, for
#   pxed       dnsmasq (DHCP only) + pxed: boot.ipxe → /ipxe?… rendered per machine
#   reference  dnsmasq (DHCP only) + a static HTTP server (nginx, else busybox
#              httpd) serving the same kernel and initrd with a static iPXE script
# in one run, alternating the two so that load drift hits both, and prints
# every run and the medians.
#
# Usage (root): bench/boot.sh [RUNS]          (default 5 runs each)
# Environment:  ACCEL=tcg|kvm (default tcg), PXED_BIN (default target/release/pxed,
#               built if missing), TIMEOUT per boot in seconds (default 300).
# Uses only a network namespace it creates (10.97.0.1/16 on a bridge); every
# process it starts is stopped by PID on exit.
set -euo pipefail

RUNS=${1:-5}
ACCEL=${ACCEL:-tcg}
TIMEOUT=${TIMEOUT:-300}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PXED_BIN=${PXED_BIN:-$REPO/target/release/pxed}
NS=pxed-bench-$$
IP=10.97.0.1
MARKER=PXED-E2E-BOOTED
PXED_MAC=52:54:00:be:00:01
REF_MAC=52:54:00:be:00:02

[ "$(id -u)" = 0 ] || { echo "bench/boot.sh: needs root (network namespaces, taps)" >&2; exit 1; }
for tool in qemu-system-x86_64 dnsmasq ip; do
    command -v "$tool" >/dev/null || { echo "bench/boot.sh: $tool is not installed" >&2; exit 1; }
done

if [ ! -x "$PXED_BIN" ]; then
    (cd "$REPO" && cargo build --release --bin pxed)
fi
PAYLOAD=$("$REPO/tests/lab/payload.sh" "$REPO/target/e2e-payload")

WORK=$(mktemp -d /tmp/pxed-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link set lo up
# The same lab as tests/common/lab.rs: an IPv6 router advertisement on the
# bridge (else iPXE's ifconf waits ~15 s for IPv6 autoconf) and no DAD.
ip netns exec "$NS" sh -c 'echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad'
ip -n "$NS" link add br0 type bridge forward_delay 0
ip -n "$NS" addr add "$IP/16" dev br0
ip -n "$NS" addr add fd97::1/64 dev br0 nodad
ip -n "$NS" link set br0 up
ip -n "$NS" tuntap add tap0 mode tap
ip -n "$NS" link set tap0 master br0 up

# DHCP for both (and the router advertisements): the reference guest's MAC gets
# the static server's script; option 175.176 spares iPXE the ProxyDHCP wait.
ip netns exec "$NS" dnsmasq --keep-in-foreground --log-facility="$WORK/dnsmasq.log" \
    --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces \
    --dhcp-range=10.97.1.1,10.97.1.254,255.255.0.0,10m --dhcp-authoritative --no-ping \
    --enable-ra --dhcp-range=fd97::,ra-only,64 \
    --pid-file= --leasefile-ro --dhcp-option=tag:ipxe,encap:175,176,1b \
    --dhcp-userclass=set:ipxe,iPXE --dhcp-mac=set:ref,"$REF_MAC" \
    --dhcp-boot=tag:ipxe,tag:ref,"http://$IP:8081/boot.ipxe" \
    --dhcp-boot=tag:ipxe,tag:!ref,"http://$IP:8080/boot.ipxe" &
PIDS+=($!)

# pxed, with the shipped templates and the payload on its search path.
cat > "$WORK/machines.toml" <<EOF
[server]
http_listen = "$IP:8080"
tftp_listen = ""
assets_dir = "$WORK/assets"
templates_dir = "$REPO/boot-templates"
search_paths = ["$PAYLOAD"]

[defaults]
kernel = "vmlinuz"
initrd = "initrd.gz"
console = { port = "ttyS0", baud = 115200 }

[[rule]]
name = "bench"
args = "quiet no_timer_check panic=-1 pxed.rule=bench"
EOF
mkdir -p "$WORK/assets"
"$PXED_BIN" check --config "$WORK/machines.toml" >/dev/null
PXED_LOG=warn ip netns exec "$NS" "$PXED_BIN" serve --config "$WORK/machines.toml" 2>"$WORK/pxed.log" &
PIDS+=($!)

# The reference: the same files and the command line pxed renders, one static script.
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
    REF_SERVER=nginx
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
    ip netns exec "$NS" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' &
    PIDS+=($!)
else
    REF_SERVER="busybox httpd"
    ip netns exec "$NS" busybox httpd -f -p "$IP:8081" -h "$WORK/www" &
    PIDS+=($!)
fi

# Both servers answer before the first guest starts.
for port in 8080 8081; do
    ok=
    for _ in $(seq 100); do
        if ip netns exec "$NS" busybox wget -q -O /dev/null "http://$IP:$port/boot.ipxe"; then ok=1; break; fi
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "bench/boot.sh: nothing answers on $IP:$port" >&2; cat "$WORK/pxed.log" >&2; exit 1; }
done

# Prefixes every console line with the time it arrived ($EPOCHREALTIME).
stamp() {
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done
}

# One boot: sets BOOT_TIME to the seconds from QEMU's start to the marker on
# the console, and HTTP_TIME to the seconds from iPXE printing the boot file
# name (DHCP done) to the initrd being loaded: the part a boot server decides.
boot_once() {
    local mac=$1 log=$2
    local start qpid
    : > "$log"
    start=$EPOCHREALTIME
    ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -nographic -m 512 -no-reboot -boot n \
        -smbios type=1,product='Express5800/i120Ra-e1 [N8100-1482Y]' \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device e1000,netdev=n0,mac="$mac" </dev/null > >(stamp >"$log") 2>&1 &
    qpid=$!
    PIDS+=("$qpid")
    local deadline=$((SECONDS + TIMEOUT))
    while ! grep -qa "$MARKER" "$log"; do
        if ! kill -0 "$qpid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            kill "$qpid" 2>/dev/null || true
            wait "$qpid" 2>/dev/null || true
            echo "bench/boot.sh: no marker from $mac; console in $log:" >&2
            tail -c 2000 "$log" >&2
            return 1
        fi
        sleep 0.05
    done
    # The guest powers off by itself right after the marker.
    for _ in $(seq 200); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    BOOT_TIME=$(awk -v s="$start" -v m="$MARKER" 'index($0, m) { printf "%.2f\n", $1 - s; exit }' "$log")
    HTTP_TIME=$(awk '/Filename: http/ && !f { f = $1 } /initrd\.gz\.\.\..*ok/ && f { printf "%.2f\n", $1 - f; exit }' "$log")
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "boot benchmark: $RUNS runs each, accel $ACCEL, $(nproc) CPUs, payload $(cat "$PAYLOAD/kernel-package")"
echo "total = QEMU start -> /init marker; http = boot file name shown -> initrd loaded (boot.ipxe, script(s), kernel, initrd)"
for f in pxed.total ref.total pxed.http ref.http; do : > "$WORK/$f"; done
for i in $(seq "$RUNS"); do
    boot_once "$PXED_MAC" "$WORK/console-pxed-$i.log"
    t=$BOOT_TIME th=$HTTP_TIME
    grep -qa "pxed.rule=bench" "$WORK/console-pxed-$i.log" || { echo "pxed run $i: wrong rule" >&2; exit 1; }
    boot_once "$REF_MAC" "$WORK/console-ref-$i.log"
    r=$BOOT_TIME rh=$HTTP_TIME
    grep -qa "pxed.rule=reference" "$WORK/console-ref-$i.log" || { echo "reference run $i: wrong script" >&2; exit 1; }
    echo "$t" >> "$WORK/pxed.total"; echo "$th" >> "$WORK/pxed.http"
    echo "$r" >> "$WORK/ref.total"; echo "$rh" >> "$WORK/ref.http"
    echo "run $i: pxed total $t s http $th s | dnsmasq+$REF_SERVER total $r s http $rh s"
done
echo "median: pxed total $(median < "$WORK/pxed.total") s http $(median < "$WORK/pxed.http") s | dnsmasq+$REF_SERVER total $(median < "$WORK/ref.total") s http $(median < "$WORK/ref.http") s"
