#!/usr/bin/env bash
# Instructions per DHCP DORA exchange and per HTTP render, counted by
# callgrind: independent of the machine's load, so two builds can be compared
# on a shared host where wall-clock benches swing 20-40%. Each workload runs
# at two sizes and the difference is divided by the extra iterations, so
# start-up (config load, template compile) cancels out.
#
#   bench/callgrind.sh            # release build of examples/callgrind.rs
#   N1=50 N2=250 bench/callgrind.sh
#   PROFILE=dev bench/callgrind.sh   # the dev build (what CI's guard counts: bench/guard.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
case ${PROFILE:-release} in
    release) cargo build -q --release --example callgrind; dir=release ;;
    dev) cargo build -q --example callgrind; dir=debug ;;
    *) echo "PROFILE is release or dev" >&2; exit 1 ;;
esac
bin=${CARGO_TARGET_DIR:-target}/$dir/examples/callgrind
n1=${N1:-20}
n2=${N2:-220}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

instructions() { # workload n
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2" "$bin" "$1" "$2" >/dev/null 2>"$out/log.$1.$2"
  sed -n 's/^summary: *//p; s/^totals: *//p' "$out/cg.$1.$2" | head -1
}

printf '%-8s %14s\n' workload "Ir/iteration"
for w in dhcp http cached; do
  a=$(instructions "$w" "$n1")
  b=$(instructions "$w" "$n2")
  printf '%-8s %14d\n' "$w" $(( (b - a) / (n2 - n1) ))
done
