#!/usr/bin/env bash
# Render endpoint vs static file: requests/s of pxed's /ipxe (a real rule
# match + handlebars render per request) and of nginx serving a static file of
# the same size, under the same wrk load, in one run. Each server is pinned to
# CPU 0, wrk to CPU 1. Only 127.0.0.1 is used; every process started here is
# stopped by its PID. Each run also times a new machine per request (a boot
# storm: nothing cached). Usage: bench/http.sh [seconds-per-run] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RUNS=${2:-3}
CONNS=${CONNS:-64}
command -v wrk >/dev/null || { echo "bench/http.sh needs wrk (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { echo "bench/http.sh needs nginx (apt-get install nginx-light)"; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

PXED_PORT=18080 NGINX_PORT=18081 QUIET_PORT=18082 NGINX_LOG_PORT=18083
mkdir -p "$work/www" "$work/assets"
cat > "$work/machines.toml" <<TOML
[server]
http_listen = "127.0.0.1:$PXED_PORT"
tftp_listen = ""
admin_listen = ""
templates_dir = "$PWD/boot-templates"
assets_dir = "$work/assets"
search_paths = []
[defaults]
kernel = "debian/vmlinuz"
initrd = "debian/initrd.gz"
$(for i in $(seq 1 50); do printf '[[rule]]\nname = "mac-%d"\nmatch = { mac = "52:54:00:00:01:%02x" }\nargs = "pxed.rule=mac-%d"\n' "$i" "$i" "$i"; done)
[[rule]]
name = "nec"
match = { product = "Express5800/*" }
args = "ip=dhcp pxed.rule=nec"
[[rule]]
name = "default"
TOML
PATH_Q='/ipxe?product=Express5800%2Fi120Ra-e1%20%5BN8100-1482Y%5D&mac=52%3A54%3A00%3A12%3A34%3A56'
taskset -c 0 target/release/pxed serve --config "$work/machines.toml" 2>"$work/pxed.log" &
pids+=($!)
# The same pxed with its log line and its boot-event record off, as nginx
# runs here with access_log off: shows what they cost. (The first pxed keeps
# the defaults: events recorded in $work/pxed-leases.sqlite.)
sed "s/127.0.0.1:$PXED_PORT/127.0.0.1:$QUIET_PORT/" "$work/machines.toml" > "$work/quiet.toml"
printf '[events]\ndb = ""\n' >> "$work/quiet.toml"
PXED_LOG=warn taskset -c 0 target/release/pxed serve --config "$work/quiet.toml" 2>"$work/quiet.log" &
pids+=($!)
for port in $PXED_PORT $QUIET_PORT; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/boot.ipxe" >/dev/null && break; sleep 0.05; done
done
curl -fs "http://127.0.0.1:$PXED_PORT$PATH_Q" > "$work/www/static.txt"
size=$(stat -c %s "$work/www/static.txt")
grep -q "rule nec" "$work/www/static.txt" || { echo "render did not match the nec rule"; cat "$work/www/static.txt"; exit 1; }

cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$NGINX_PORT; root $work/www; keepalive_requests 1000000; }
  # The same with an access log (buffered, as pxed's log is): like for like
  # with pxed's one log line per rendered script.
  server { listen 127.0.0.1:$NGINX_LOG_PORT; root $work/www; keepalive_requests 1000000;
           access_log $work/access.log combined buffer=64k; }
}
CONF
taskset -c 0 nginx -c "$work/nginx.conf" &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$NGINX_PORT/static.txt" >/dev/null && break; sleep 0.05; done
cmp <(curl -fs "http://127.0.0.1:$NGINX_PORT/static.txt") "$work/www/static.txt"

# Server CPU per request as well as requests/s: on this shared host the
# rates swing with other work, the CPU a request costs much less. From
# /proc/<pid>/stat (utime + stime, in clock ticks), around each wrk run.
declare -A procs=([pxed]="${pids[0]}" [new]="${pids[0]}" [quiet]="${pids[1]}"
                  [nginx]="${pids[2]} $(pgrep -P "${pids[2]}" | tr '\n' ' ')")
procs[nginxlog]=${procs[nginx]}
tick_us=$((1000000 / $(getconf CLK_TCK)))
ticks() { for p in $1; do cat "/proc/$p/stat"; done | awk '{t += $14 + $15} END {print t}'; }
# rps NAME wrk-args...: appends req/s to $work/NAME.rps, CPU us/request to $work/NAME.cpu
rps() {
  local name=$1 t0 t1 out
  shift
  t0=$(ticks "${procs[$name]}")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" "$@")
  t1=$(ticks "${procs[$name]}")
  awk '/Requests\/sec/ {print $2}' <<<"$out" >> "$work/$name.rps"
  awk -v t=$((t1 - t0)) -v us="$tick_us" '/requests in/ {printf "%.1f\n", t * us / $1}' <<<"$out" >> "$work/$name.cpu"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "response size: $size bytes; wrk -t1 -c$CONNS -d${SECS}s, $RUNS runs each, alternating"
# A boot storm's case: every request a different machine (a fresh MAC each
# time), so nothing is cached and every render is logged and recorded. Run i
# starts its MACs at i * 1,000,000 so no run repeats another's machines.
cat > "$work/distinct.lua" <<'LUA'
local n = 0
init = function(args)
  n = tonumber(args[1]) or 0
end
request = function()
  n = n + 1
  local mac = string.format("52%%3A54%%3A01%%3A%02x%%3A%02x%%3A%02x", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/ipxe?product=Express5800%2Fi120Ra-e1%20%5BN8100-1482Y%5D&mac=" .. mac)
end
LUA
: > "$work/pxed.rps"; : > "$work/quiet.rps"; : > "$work/nginx.rps"; : > "$work/nginxlog.rps"; : > "$work/new.rps"
for r in $(seq "$RUNS"); do
  rps pxed "http://127.0.0.1:$PXED_PORT$PATH_Q"
  rps nginx "http://127.0.0.1:$NGINX_PORT/static.txt"
  rps quiet "http://127.0.0.1:$QUIET_PORT$PATH_Q"
  rps nginxlog "http://127.0.0.1:$NGINX_LOG_PORT/static.txt"
  rps new -s "$work/distinct.lua" "http://127.0.0.1:$PXED_PORT" -- "$((r * 1000000))"
done
p=$(median < "$work/pxed.rps"); q=$(median < "$work/quiet.rps"); n=$(median < "$work/nginx.rps"); l=$(median < "$work/nginxlog.rps")
printf '%-34s %12s   runs: %s\n' "pxed /ipxe render (log, events)" "$p req/s" "$(tr '\n' ' ' < "$work/pxed.rps")"
printf '%-34s %12s   runs: %s\n' "pxed /ipxe render (no log/events)" "$q req/s" "$(tr '\n' ' ' < "$work/quiet.rps")"
printf '%-34s %12s   runs: %s\n' "nginx static (1 worker, no log)" "$n req/s" "$(tr '\n' ' ' < "$work/nginx.rps")"
printf '%-34s %12s   runs: %s\n' "nginx static (1 worker, access log)" "$l req/s" "$(tr '\n' ' ' < "$work/nginxlog.rps")"
# Runs alternate, so run i of each server saw the same machine load: the
# median of per-run ratios is steadier than a ratio of medians on a busy VM.
# Like for like: pxed without its log line vs nginx without access log, and
# pxed with its log line vs nginx with its access log.
paste "$work/quiet.rps" "$work/nginx.rps" "$work/pxed.rps" "$work/nginxlog.rps" |
  awk '{ printf "%.2f %.2f\n", $1 / $2, $3 / $4 }' > "$work/ratios"
printf 'per-run ratios (no logs, with logs): %s\n' "$(tr '\n' ' ' < "$work/ratios")"
printf 'pxed/nginx, median per-run ratio: %s without logs, %s with logs (goal with logs >= 1.0)\n' \
  "$(cut -d' ' -f1 "$work/ratios" | median)" "$(cut -d' ' -f2 "$work/ratios" | median)"

# A new machine per request (the pxed with logs and events) against nginx
# with its access log, run by run.
paste "$work/new.rps" "$work/nginxlog.rps" | awk '{ printf "%.2f\n", $1 / $2 }' > "$work/new.ratios"
printf '%-34s %12s   runs: %s\n' "pxed, a new machine per request" "$(median < "$work/new.rps") req/s" "$(tr '\n' ' ' < "$work/new.rps")"
printf 'new machine / nginx with access log, per run: %s; median %s (goal >= 0.5)\n' \
  "$(tr '\n' ' ' < "$work/new.ratios")" "$(median < "$work/new.ratios")"

# Server CPU per request (median of the runs) and pxed's over nginx's with
# its access log: below 1.0 pxed spends less CPU on a request than nginx.
printf '\nserver CPU per request, us (median; runs):\n'
for n in pxed quiet nginx nginxlog new; do
  printf '  %-9s %6s   %s\n' "$n" "$(median < "$work/$n.cpu")" "$(tr '\n' ' ' < "$work/$n.cpu")"
done
l=$(median < "$work/nginxlog.cpu")
printf 'pxed CPU/request over nginx with access log: cached %s, new machine %s\n' \
  "$(awk -v a="$(median < "$work/pxed.cpu")" -v b="$l" 'BEGIN {printf "%.2f", a / b}')" \
  "$(awk -v a="$(median < "$work/new.cpu")" -v b="$l" 'BEGIN {printf "%.2f", a / b}')"
