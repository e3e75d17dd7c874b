#!/usr/bin/env bash
# bench_split.sh PORT PID [PATH] [SECONDS] [CONNECTION]: where a proxy's CPU per request goes, user space against
# the kernel. Runs wrk (CPU 1, 64 connections, 2 s warm-up, then SECONDS, default 5) against 127.0.0.1:PORT and
# reads the user and system ticks of PID and its children (an nginx master's worker) from /proc before and after,
# as ../shared/bench/peers.sh reads their sum. Prints user_us_per_req, sys_us_per_req and cpu_us_per_req.
# CONNECTION=close sends `Connection: close`: every request on a connection of its own (wrk reconnects), so the
# figure includes accepting and closing it, what short-lived clients cost.
set -euo pipefail
port=$1 pid=$2 path=${3:-/} secs=${4:-5} connection=${5:-keep-alive}
headers=()
[[ $connection == close ]] && headers=(-H "Connection: close")
ticks() {  # "user system" of pid and its children
  local user=0 system=0 p
  for p in $pid $(pgrep -P "$pid" || true); do
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    user=$((user + u)) system=$((system + s))
  done
  echo "$user $system"
}
taskset -c 1 wrk -t1 -c64 -d2s "${headers[@]}" "http://127.0.0.1:$port$path" >/dev/null
read -r user0 system0 < <(ticks)
requests=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" "${headers[@]}" "http://127.0.0.1:$port$path" | awk '/requests in/ {print $1}')
read -r user1 system1 < <(ticks)
awk -v u=$((user1 - user0)) -v s=$((system1 - system0)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {
  printf "user_us_per_req=%.1f sys_us_per_req=%.1f cpu_us_per_req=%.1f requests=%d\n",
    u / hz * 1e6 / n, s / hz * 1e6 / n, (u + s) / hz * 1e6 / n, n }'
