#!/usr/bin/env bash
# User-space instructions per proxied keep-alive request, counted by valgrind's callgrind for alb, nginx and
# HAProxy on the same backend: a figure that, unlike CPU time, does not move with the machine's load, so a
# change of a percent shows (docs/benchmarks.md, "Instructions per request"). Each proxy runs under callgrind
# alone; 500 warm-up requests, counters zeroed, then N requests one at a time over 4 keep-alive connections
# (Python's http.client: GET / with Host and Accept-Encoding), counters dumped. The kernel's share is not
# counted (callgrind sees user space only): `make bench`'s split rows have it.
# Usage: bench_instructions.sh ALB_BINARY MANIFEST_DIR ALB_PORT BACKEND_PORT [N]
#   MANIFEST_DIR holds an HTTP listener on 127.0.0.1:ALB_PORT forwarding to BACKEND_PORT (make bench passes its
#   own, tests/bench.sh); nginx and HAProxy proxy to the same backend on 127.0.0.1:19011 and 19012.
set -euo pipefail
alb=$1 manifests=$2 alb_port=$3 backend=$4 n=${5:-2000}
command -v valgrind >/dev/null || { echo "bench_instructions: valgrind is not installed (make bench-deps)" >&2; exit 1; }
work=$(mktemp -d /tmp/alb-bench-instructions.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/client.py" <<'PY'
import http.client, sys
count, port = int(sys.argv[1]), int(sys.argv[2])
connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(4)]
for i in range(count):
    connection = connections[i % 4]
    connection.request("GET", "/")
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit("status %d from port %d" % (response.status, port))
PY
cat > "$work/nginx.conf" <<CONF
worker_processes 1; daemon off; master_process off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$backend; keepalive 128; }
  server { listen 127.0.0.1:19011;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:19012
  default_backend be
backend be
  server s1 127.0.0.1:$backend
CONF
# valgrind 3.19 cannot read the DWARF 5 of a Swift release build: count on a copy without it (symbols stay).
strip --strip-debug -o "$work/alb" "$alb"

measure() {  # name port command...
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out.%p" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.2; done
  python3 "$work/client.py" 500 "$port"
  sleep 1
  callgrind_control -z "$pid" >/dev/null 2>&1
  python3 "$work/client.py" "$n" "$port"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local total
  total=$(callgrind_annotate "$(ls -t "$work/$name.out.$pid".* | head -1)" 2>/dev/null \
          | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  echo "$name instructions path=/ requests=$n user_instructions_per_req=$((total / n))"
}
measure nginx 19011 nginx -c "$work/nginx.conf"
measure haproxy 19012 haproxy -db -f "$work/haproxy.cfg"
measure alb "$alb_port" "$work/alb" reconcile "$manifests" --status-dir "$work/s" --log-level warning
