#!/usr/bin/env bash
# Metrics on vs off (part of `make bench`; alone: `bash tests/bench_metrics.sh [ROUNDS] [SECONDS]`): CPU
# microseconds per proxied request of the release binary without `--admin` (off: the status files' counters
# only) and with `--admin` while /metrics is scraped every second (on: durations, bytes, the scrapes
# themselves). Rounds alternate off/on so drift on the machine falls on both; a fresh process per round.
# Prints one line per round and a summary line with the means and the change in percent. With
# ALB_BENCH_BASE=PATH each round also runs that binary (e.g. a build from before a change) without --admin.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6} secs=${2:-5}
peers=../shared/bench/peers.sh
bin=${ALB_BENCH_BIN:-.build/release/alb}   # another binary to compare: ALB_BENCH_BIN=PATH
[[ -x $bin ]] || { echo "bench_metrics needs $bin (make bench builds it: make build CONFIG=release)" >&2; exit 1; }
started_peers=
if ! curl -fsS -o /dev/null http://127.0.0.1:19000/ 2>/dev/null; then bash "$peers" start >/dev/null; started_peers=1; fi
work=$(mktemp -d /tmp/alb-bench-metrics.XXXX)
alb_pid= scraper_pid=
cleanup() {
  [[ -n $scraper_pid ]] && kill "$scraper_pid" 2>/dev/null
  [[ -n $alb_pid ]] && kill "$alb_pid" 2>/dev/null
  [[ -n $started_peers ]] && bash "$peers" stop
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/m"
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
admin=19904
off=() on=() base=()
modes=(off on)
[[ -n ${ALB_BENCH_BASE:-} ]] && modes=(base off on)
for round in $(seq "$rounds"); do
  for mode in "${modes[@]}"; do
    extra=() run=$bin
    [[ $mode == on ]] && extra=(--admin "127.0.0.1:$admin")
    [[ $mode == base ]] && run=$ALB_BENCH_BASE
    rm -rf "$work/s"
    taskset -c 0 "$run" reconcile "$work/m" --status-dir "$work/s" --log-level warning "${extra[@]}" & alb_pid=$!
    for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:19003/ 2>/dev/null && break; sleep 0.1; done
    if [[ $mode == on ]]; then
      ( while sleep 1; do curl -fsS -o /dev/null "http://127.0.0.1:$admin/metrics" || true; done ) & scraper_pid=$!
    fi
    bash "$peers" bench 19003 "$alb_pid" / 64 2 >/dev/null   # warm-up
    line=$(bash "$peers" bench 19003 "$alb_pid" / 64 "$secs")
    cpu=$(sed -n 's/.*cpu_us_per_req=\([0-9.]*\).*/\1/p' <<<"$line")
    if [[ $mode == on ]]; then
      scrapes=$( (curl -fsS "http://127.0.0.1:$admin/metrics" || true) | awk '/^alb_listener_requests_total\{listener="bench",protocol="HTTP\/1.1",code_class="2xx"\}/ {print $2}')
      kill "$scraper_pid" 2>/dev/null; wait "$scraper_pid" 2>/dev/null || true; scraper_pid=
      on+=("$cpu")
      echo "alb metrics=on round=$round $line counted_2xx=${scrapes:-0}"
    elif [[ $mode == base ]]; then
      base+=("$cpu")
      echo "alb base round=$round $line"
    else
      off+=("$cpu")
      echo "alb metrics=off round=$round $line"
    fi
    kill "$alb_pid"; wait "$alb_pid" 2>/dev/null || true; alb_pid=
  done
done
python3 - "${off[*]}" "${on[*]}" "${base[*]:-}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
base = [float(x) for x in sys.argv[3].split()]
mean_off, mean_on = statistics.mean(off), statistics.mean(on)
print("alb metrics on vs off: cpu_us_per_req_off=%.2f cpu_us_per_req_on=%.2f change_pct=%.1f median_off=%.1f median_on=%.1f"
      % (mean_off, mean_on, (mean_on / mean_off - 1) * 100, statistics.median(off), statistics.median(on)))
if base:
    mean_base = statistics.mean(base)
    print("alb metrics vs base: cpu_us_per_req_base=%.2f off_change_pct=%.1f on_change_pct=%.1f median_base=%.1f"
          % (mean_base, (mean_off / mean_base - 1) * 100, (mean_on / mean_base - 1) * 100, statistics.median(base)))
PY
