#!/usr/bin/env bash
# make bench: CPU microseconds per proxied request for alb beside nginx and HAProxy (../shared/bench/peers.sh) and
# how each splits between user space and the kernel, beside a bare NIO relay (tests/bench_split.sh, tests/nio_relay),
# also with a new connection for every request; the HTTPS rows (tests/bench_tls.py: handshakes and CPU per request
# over TLS, HTTP/1.1 and HTTP/2, idle TLS memory), the HTTP/3 row (tests/bench_http3.py: one QUIC connection of many
# streams beside one HTTP/2 one), the WebSocket rows (tests/bench_websocket.py: messages per second and CPU per
# message, direct, alb, nginx), compression rows (tests/bench_compression.py: a 1 MiB JSON response, Brotli and gzip,
# beside nginx), parking idle connections on vs off (tests/bench_parking.py: CPU per request after an idle period),
# metrics on vs off (tests/bench_metrics.sh: CPU per request without --admin and with /metrics scraped), then the
# reconciler's change latency with 100 listeners beside nginx's and HAProxy's reloads, user-space instructions per
# proxied request under valgrind's callgrind beside nginx and HAProxy (tests/bench_instructions.sh), and last the
# heap allocations per proxied request (tests/bench_allocs.py, needs .build/alloc_counter.so: `make alloc-counter`).
# Everything printed is also kept in .build/bench/bench-TIME.txt, and tests/bench_summary.py turns it into
# .build/bench/bench-TIME.json (one row per printed measurement, peers beside alb as in the table).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${ALB_BENCH_TEED:-} ]]; then
  mkdir -p .build/bench
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  ALB_BENCH_TEED=1 bash "$0" "$@" 2>&1 | tee ".build/bench/bench-$stamp.txt"
  status=${PIPESTATUS[0]}
  python3 tests/bench_summary.py < ".build/bench/bench-$stamp.txt" > ".build/bench/bench-$stamp.json"
  echo "bench: summary in .build/bench/bench-$stamp.json"
  exit "$status"
fi
peers=../shared/bench/peers.sh
[[ -x $peers || -f $peers ]] || { echo "bench needs ../shared/bench/peers.sh" >&2; exit 1; }
work=$(mktemp -d /tmp/alb-bench.XXXX)
cleanup() {
  [[ -n ${alb_pid:-} ]] && kill "$alb_pid" 2>/dev/null
  [[ -n ${relay_pid:-} ]] && kill "$relay_pid" 2>/dev/null
  bash "$peers" stop || true
}
trap cleanup EXIT
bash "$peers" start
# Memory per idle keep-alive connection of the peers first, while they are fresh (after load their allocators
# hand idle connections memory the load freed, and they read low); alb's, also fresh, comes below.
for peer in nginx:19001 haproxy:19002; do
  name=${peer%%:*} port=${peer##*:}
  master=$(bash "$peers" pid "$name"); pid=$(pgrep -P "$master" | head -1 || true); pid=${pid:-$master}   # nginx: its worker
  echo "$name $(python3 tests/bench_idle_memory.py "$pid" "$port" 2000)"
done
mkdir -p "$work/m"
write_manifest() {  # $1: the server group's scheduler
cat > "$work/m/bench.yaml" <<YAML
apiVersion: alb/v1
kind: LoadBalancer
metadata: {name: bench}
spec: {address: 127.0.0.1}
---
apiVersion: alb/v1
kind: ServerGroup
metadata: {name: nginx-backend}
spec:
  scheduler: $1
  servers: [{address: 127.0.0.1, port: 19000}]
---
apiVersion: alb/v1
kind: Listener
metadata: {name: bench}
spec:
  loadBalancer: bench
  protocol: HTTP
  port: 19003
  defaultAction: {forwardGroup: {serverGroups: [{name: nginx-backend}]}}
YAML
}
write_manifest Wrr
taskset -c 0 .build/release/alb reconcile "$work/m" --status-dir "$work/s" --log-level warning & alb_pid=$!
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:19003/ 2>/dev/null && break; sleep 0.1; done
for path in / /big; do
  for peer in nginx:19001 haproxy:19002 alb:19003; do
    name=${peer%%:*} port=${peer##*:}
    if [[ $name == alb ]]; then pid=$alb_pid; else pid=$(bash "$peers" pid "$name"); fi
    bash "$peers" bench "$port" "$pid" "$path" 64 5 >/dev/null   # warm-up
    echo "$name path=$path $(bash "$peers" bench "$port" "$pid" "$path" 64 5)"
  done
done
# The other schedulers on the same listener (a SIGHUP applies the edit): each must stay within 5% of Wrr.
for scheduler in Wlc Sch; do
  write_manifest "$scheduler"; kill -HUP "$alb_pid"; sleep 1
  bash "$peers" bench 19003 "$alb_pid" / 64 5 >/dev/null   # warm-up
  echo "alb scheduler=$scheduler path=/ $(bash "$peers" bench 19003 "$alb_pid" / 64 5)"
done
write_manifest Wrr; kill -HUP "$alb_pid"; sleep 1
# Where each proxy's CPU goes, user space against the kernel, beside the floor of any NIO proxy: tests/nio_relay
# relays bytes between a client and a backend connection of its own (no HTTP), built from alb's own NIO checkout
# with alb's optimisation flags (the Makefile's SWIFT_OPTIMISATION_FLAGS, which `make bench` passes on).
SWIFTCI_USE_LOCAL_DEPS=1 swift build -c release --package-path tests/nio_relay ${SWIFT_OPTIMISATION_FLAGS:?run through make bench} >/dev/null
taskset -c 0 tests/nio_relay/.build/release/nio-relay 19004 19000 >/dev/null & relay_pid=$!
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:19004/ 2>/dev/null && break; sleep 0.1; done
for path in / /big; do
  for peer in nginx:19001 haproxy:19002 alb:19003 nio-relay:19004; do
    name=${peer%%:*} port=${peer##*:}
    case $name in alb) pid=$alb_pid ;; nio-relay) pid=$relay_pid ;; *) pid=$(bash "$peers" pid "$name") ;; esac
    echo "$name split path=$path $(bash tests/bench_split.sh "$port" "$pid" "$path" 5)"
  done
done
kill "$relay_pid"; wait "$relay_pid" 2>/dev/null || true; relay_pid=
# Short-lived clients: every request on a new connection (`Connection: close`), accepting and closing included.
for peer in nginx:19001 haproxy:19002 alb:19003; do
  name=${peer%%:*} port=${peer##*:}
  if [[ $name == alb ]]; then pid=$alb_pid; else pid=$(bash "$peers" pid "$name"); fi
  echo "$name split path=/ connection=close $(bash tests/bench_split.sh "$port" "$pid" / 5 close)"
done
# Memory per idle keep-alive connection, 2,000 clients as for the peers above, then 10,000 for alb alone (the
# peers' configurations cap connections lower). alb is measured in a fresh process each time: after the load
# above its allocator would hand the idle connections memory the load freed, and RSS would not move (a loaded
# alb read 0 bytes per connection). Twice: idle connections on their channels (`--park-idle-after 0`: what a
# connection idle for less than 5 seconds costs), then parked (the default, read 8 s after the last response).
kill "$alb_pid"; wait "$alb_pid" 2>/dev/null || true
fresh_alb() {  # arguments: alb's options beyond the usual
  rm -rf "$work/s"
  taskset -c 0 .build/release/alb reconcile "$work/m" --status-dir "$work/s" --log-level warning "$@" & alb_pid=$!
  for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:19003/ 2>/dev/null && break; sleep 0.1; done
}
for clients in 2000 10000; do
  fresh_alb --park-idle-after 0
  echo "alb $(python3 tests/bench_idle_memory.py "$alb_pid" 19003 "$clients")"
  kill "$alb_pid"; wait "$alb_pid" 2>/dev/null || true
  fresh_alb
  echo "alb parked $(python3 tests/bench_idle_memory.py "$alb_pid" 19003 "$clients" 8)"
  kill "$alb_pid"; wait "$alb_pid" 2>/dev/null || true
done
fresh_alb
python3 tests/bench_tls.py .build/release/alb
python3 tests/bench_http3.py .build/release/alb
python3 tests/bench_websocket.py .build/release/alb 8 10000
# What a request after an idle period costs with parking on and off (one park and resume).
python3 tests/bench_parking.py .build/release/alb 1000 3
# Compression: a 1 MiB JSON response through alb and through nginx (Brotli filter and gzip), own peers.
python3 tests/bench_compression.py .build/release/alb
kill "$alb_pid"; wait "$alb_pid" 2>/dev/null || true; alb_pid=
bash tests/bench_metrics.sh 6 5   # metrics on (--admin, scraped every second) vs off: CPU per request
python3 tests/bench_reconcile.py .build/release/alb 100 20
python3 ../shared/bench/reload.py all 100 20 || true
# User-space instructions per request under callgrind, alb beside nginx and HAProxy: steady where CPU time scatters.
bash tests/bench_instructions.sh .build/release/alb "$work/m" 19003 19000   # the manifest written above
python3 tests/bench_allocs.py .build/release/alb
