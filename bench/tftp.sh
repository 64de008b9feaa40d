#!/usr/bin/env bash
# bench/tftp.sh: pxed's TFTP server against dnsmasq, tftpd-hpa and atftpd, in
# one run, on 127.0.0.1 only. Each server is pinned to core 0, the load client
# (examples/tftp_load.rs: one process, one socket per transfer) to core 1.
#
# Scenarios (each RUNS times per server, interleaved; medians reported):
#   storm512   200 concurrent fetches of undionly.kpxe, 512-byte blocks
#              (on 2 cores the one-process client bounds the storms: see the
#              "load client busy" table and docs/decisions.md)
#   storm1468  the same with blksize 1468
#   lock1468   one 20 MiB file, blksize 1468, lockstep
#   win16      the same with windowsize 16 (servers without RFC 7440 stay lockstep)
#
# Needs root (dnsmasq's TFTP port is always 69, and 127.0.0.1:69 must be free),
# taskset, python3, and the servers: dnsmasq (dnsmasq-base), in.tftpd
# (tftpd-hpa), atftpd. tftpd-hpa and atftpd conflict as packages (both ship
# /usr/sbin/in.tftpd), so with tftpd-hpa installed unpack atftpd beside it:
#   apt-get download atftpd && dpkg-deb -x atftpd_*.deb /tmp/peers/root
#   ATFTPD=/tmp/peers/root/usr/sbin/atftpd bench/tftp.sh
# A missing server is skipped with a note. Optional extra rows: ASYNC_TFTP=<bin>
# (a binary serving `<dir> <addr>` with async-tftp; see docs/decisions.md), and
# PXED_BASE=<pxed binary> (e.g. one built from main) to compare a change with
# its baseline in the same run.
#
# While working on one figure, SERVERS="pxed atftpd" and SCENARIOS="lock1468"
# narrow the run (space-separated names from the lists above).
#
# Usage: RUNS=5 bench/tftp.sh
set -euo pipefail

RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-200}
repo=$(cd "$(dirname "$0")/.." && pwd)
INTFTPD=${INTFTPD:-$(command -v in.tftpd || true)}
ATFTPD=${ATFTPD:-$(command -v atftpd || true)}
DNSMASQ=${DNSMASQ:-$(command -v dnsmasq || true)}
ASYNC_TFTP=${ASYNC_TFTP:-}
PXED_BASE=${PXED_BASE:-}

work=$(mktemp -d /tmp/pxed-tftp-bench.XXXXXX)
chmod 755 "$work"
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; rm -rf "$work"' EXIT

if [[ $(id -u) != 0 ]]; then
    echo "bench/tftp.sh: needs root (dnsmasq serves TFTP on port 69 only)" >&2
    exit 1
fi
if ss -lnu | grep -q '127.0.0.1:69 \|0.0.0.0:69 \|\*:69 '; then
    echo "bench/tftp.sh: UDP port 69 is in use; stop that TFTP server first" >&2
    exit 1
fi

(cd "$repo" && cargo build --release --quiet --bin pxed --example tftp_load)
PXED=$repo/target/release/pxed
LOAD=$repo/target/release/examples/tftp_load

root=$work/root
mkdir -p "$root"
cp /usr/lib/ipxe/undionly.kpxe "$root/"
head -c $((20 << 20)) /dev/urandom >"$root/big.bin"
chmod -R a+rX "$root"

# pxed: a minimal config around the same root.
mkdir -p "$work/pxed"
cp -r "$repo/boot-templates" "$work/pxed/"
cat >"$work/pxed/machines.toml" <<EOF
[server]
http_listen = "127.0.0.1:0"
admin_listen = ""
tftp_listen = "127.0.0.1:16901"
assets_dir = "$root"
search_paths = []

[[rule]]
name = "default"
kernel = "vmlinuz"
EOF

wait_port() { # port
    for _ in $(seq 100); do
        ss -lnu | grep -q "127.0.0.1:$1 " && return 0
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    return 1
}

start_server() { # name -> sets server_pid and port
    case $1 in
    pxed | pxed-base)
        port=16901
        local bin=$PXED
        [[ $1 == pxed-base ]] && bin=$PXED_BASE
        PXED_LOG=info taskset -c 0 "$bin" serve --config "$work/pxed/machines.toml" 2>>"$work/$1.log" &
        ;;
    dnsmasq)
        port=69
        # --tftp-max: the default of 50 concurrent transfers would throttle the storm.
        taskset -c 0 "$DNSMASQ" -k --conf-file=/dev/null --port=0 --listen-address=127.0.0.1 \
            --bind-interfaces --enable-tftp --tftp-root="$root" --tftp-max=1000 \
            --pid-file="$work/dnsmasq.pid" --log-facility="$work/dnsmasq.log" &
        ;;
    tftpd-hpa)
        port=16902
        taskset -c 0 "$INTFTPD" -L -a "127.0.0.1:$port" -s -u nobody "$root" &
        ;;
    atftpd)
        port=16903
        taskset -c 0 "$ATFTPD" --daemon --no-fork --port "$port" --bind-address 127.0.0.1 \
            --user nobody.nogroup --maxthread 1000 --logfile /dev/null "$root" &
        ;;
    async-tftp)
        port=16904
        taskset -c 0 "$ASYNC_TFTP" "$root" "127.0.0.1:$port" >/dev/null &
        ;;
    esac
    server_pid=$!
    wait_port "$port"
}

servers=(pxed)
[[ -n "$PXED_BASE" ]] && servers+=(pxed-base)
[[ -n "$DNSMASQ" ]] && servers+=(dnsmasq) || echo "note: dnsmasq not found, skipped"
[[ -n "$INTFTPD" ]] && "$INTFTPD" -V 2>&1 | grep -q tftp-hpa && servers+=(tftpd-hpa) ||
    echo "note: in.tftpd of tftpd-hpa not found (INTFTPD=), skipped"
[[ -n "$ATFTPD" ]] && servers+=(atftpd) || echo "note: atftpd not found (ATFTPD=), skipped"
[[ -n "$ASYNC_TFTP" ]] && servers+=(async-tftp)
if [[ -n "${SERVERS:-}" ]]; then
    wanted=()
    for s in "${servers[@]}"; do [[ " $SERVERS " == *" $s "* ]] && wanted+=("$s"); done
    servers=("${wanted[@]}")
fi
SCENARIOS=${SCENARIOS:-storm512 storm1468 lock1468 win16}

results=$work/results
: >"$results"
# CPU time (ms) the server process used so far, its threads and reaped
# children (tftpd-hpa forks one per transfer) included. Less sensitive than
# wall time to other work on the host.
cpu_ms() { awk '{print ($14+$15+$16+$17)*1000/'"$(getconf CLK_TCK)"'}' "/proc/$1/stat"; }
load() { # server scenario run args...
    local server=$1 scenario=$2 run=$3
    shift 3
    local line c0 c1
    c0=$(cpu_ms "$server_pid")
    line=$(taskset -c 1 "$LOAD" --server "127.0.0.1:$port" "$@")
    c1=$(cpu_ms "$server_pid")
    line="$line server_cpu_ms=$((c1 - c0))"
    echo "$server $scenario $run $line" >>"$results"
    echo "  $server $scenario run $run: $line"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on this host skews figures; medians of $RUNS runs)"
for run in $(seq "$RUNS"); do
    for s in "${servers[@]}"; do
        start_server "$s"
        kpxe=(--file undionly.kpxe --expect "$root/undionly.kpxe" --clients "$CLIENTS" --deadline-s 30)
        big=(--file big.bin --expect "$root/big.bin" --clients 1 --blksize 1468 --deadline-s 60)
        for scenario in $SCENARIOS; do
            case $scenario in
            storm512) load "$s" storm512 "$run" "${kpxe[@]}" ;;
            storm1468) load "$s" storm1468 "$run" "${kpxe[@]}" --blksize 1468 ;;
            lock1468) load "$s" lock1468 "$run" "${big[@]}" ;;
            win16) load "$s" win16 "$run" "${big[@]}" --windowsize 16 ;;
            *) echo "unknown scenario $scenario" >&2 && exit 1 ;;
            esac
        done
        stop_server
    done
done

python3 - "$results" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    server, scenario, run, rest = line.split(None, 3)
    kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', rest))
    rows.setdefault((scenario, server), []).append(kv)
OURS = ("pxed", "pxed-base", "async-tftp")
servers = []
for (_, s) in rows:
    if s not in servers:
        servers.append(s)
scen = [("storm512", "200-client storm, 512 B blocks", "wall_ms", "ms", min),
        ("storm1468", "200-client storm, 1468 B blocks", "wall_ms", "ms", min),
        ("lock1468", "20 MiB, blksize 1468, lockstep", "MBps", "MB/s", max),
        ("win16", "20 MiB, blksize 1468, windowsize 16", "MBps", "MB/s", max)]
print()
print("| scenario | " + " | ".join(servers) + " | pxed vs best peer |")
print("|---|" + "---|" * (len(servers) + 1))
for key, title, field, unit, best in scen:
    cells, med = [], {}
    for s in servers:
        runs = rows.get((key, s), [])
        if not runs:
            cells.append("-"); continue
        m = statistics.median(float(r[field]) for r in runs)
        fails = sum(int(r["failed"]) for r in runs)
        med[s] = m
        cells.append(f"{m:.1f} {unit}" + (f" ({fails} failed)" if fails else ""))
    peers = {s: v for s, v in med.items() if s not in OURS}
    ratio = "-"
    if "pxed" in med and peers:
        b = best(peers, key=peers.get)
        r = med["pxed"] / peers[b]
        ratio = f"{r:.2f}x {b}" + (" (lower is better)" if field == "wall_ms" else " (higher is better)")
    print(f"| {title} | " + " | ".join(cells) + f" | {ratio} |")
print()
print("pxed vs the best peer of the same run, per run (wall: lower is better;")
print("MB/s: higher is better):")
print()
for key, title, field, unit, best in scen:
    per_run = []
    runs = {}
    for (k, s), rs in rows.items():
        if k != key:
            continue
        for i, r in enumerate(rs):
            runs.setdefault(i, {})[s] = float(r[field])
    for i in sorted(runs):
        peers = {s: v for s, v in runs[i].items() if s not in OURS}
        if "pxed" in runs[i] and peers:
            b = best(peers, key=peers.get)
            cell = f"{runs[i]['pxed'] / peers[b]:.2f} ({b})"
            if "pxed-base" in runs[i]:
                cell += f", base {runs[i]['pxed-base'] / peers[b]:.2f}"
            per_run.append(cell)
    print(f"- {title}: " + "; ".join(per_run))
print()
print("Server CPU time per scenario (ms, median; 10 ms clock ticks; tftpd-hpa's")
print("per-transfer children are auto-reaped, so their CPU is not counted):")
print()
def per_server_table(value, fmt):
    """A scenario x server table of the median of value(run)."""
    print("| scenario | " + " | ".join(servers) + " |")
    print("|---|" + "---|" * len(servers))
    for key, title, *_ in scen:
        cells = []
        for s in servers:
            vals = [v for v in map(value, rows.get((key, s), [])) if v is not None]
            cells.append(format(statistics.median(vals), fmt) if vals else "-")
        print(f"| {title} | " + " | ".join(cells) + " |")

per_server_table(lambda r: float(r["server_cpu_ms"]), ".0f")
print()
print("Load client busy: its CPU time / the wall time (median). Near 1.00 the")
print("one-process client, not the server, bounded that figure: compare the")
print("servers' CPU time there rather than their wall time.")
print()
per_server_table(lambda r: float(r["client_cpu_ms"]) / float(r["wall_ms"]) if "client_cpu_ms" in r else None, ".2f")
print()
print("Server CPU time, pxed / the peer that was fastest in that scenario (sum")
print("over all runs; CPU time is far less sensitive to other work on the host")
print("than wall time; tftpd-hpa's children are not counted, so it is left out):")
print()
for key, title, field, unit, best in scen:
    med = {s: statistics.median(float(r[field]) for r in rs)
           for (k, s), rs in rows.items() if k == key}
    peers = {s: v for s, v in med.items() if s not in OURS and s != "tftpd-hpa"}
    if "pxed" not in med or not peers:
        continue
    b = best(peers, key=peers.get)
    cpu = lambda s: sum(float(r["server_cpu_ms"]) for r in rows[(key, s)])
    if cpu(b) > 0:
        print(f"- {title}: {cpu('pxed') / cpu(b):.2f} ({b}, {cpu('pxed'):.0f} / {cpu(b):.0f} ms)")
EOF
