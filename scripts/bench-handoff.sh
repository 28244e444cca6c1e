#!/usr/bin/env bash
# How long a drain takes to hand N rooms to the other node: two nodes on this
# machine, N rooms created through n1's API (about half are n1's), SIGTERM n1, and
# n2's ringway_handoffs_received_total polled every 10 ms until it stops growing.
# Usage: scripts/bench-handoff.sh [ROOMS]   (default 20000: ~10,000 owned by n1)
set -euo pipefail
rooms=${1:-20000}
bin=${RINGWAY_BIN:-target/release/ringway}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
common=(--mesh-secret bench-handoff-secret-0123456789 --workers 2 --no-pin --rate-limit 0)
RINGWAY_LOG=warn "$bin" --node-id n1 --listen 127.0.0.1:18301 --api-listen 127.0.0.1:18311 \
  --mesh-listen 127.0.0.1:18321 --peer n2=127.0.0.1:18322 "${common[@]}" >"$dir/n1.log" 2>&1 &
n1=$!
RINGWAY_LOG=warn "$bin" --node-id n2 --listen 127.0.0.1:18302 --api-listen 127.0.0.1:18312 \
  --mesh-listen 127.0.0.1:18322 --peer n1=127.0.0.1:18321 "${common[@]}" >"$dir/n2.log" 2>&1 &
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m"({|$)" {s+=$2} END {print s+0}'; }
linked() { curl -s http://127.0.0.1:18311/v1/cluster | grep -q '"up":true'; }
for _ in $(seq 100); do
  linked && [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18312/readyz)" = 200 ] && break
  sleep 0.1
done
linked || { echo "the two nodes did not link (ports 18301-18322 busy?); see $dir" >&2; exit 1; }
python3 - "$rooms" <<'PY'
import http.client, json, sys
n = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", 18311)
for i in range(n):
    body = json.dumps({"room": f"h:{i}", "data": {"i": i}})
    c.request("POST", "/v1/publish", body, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
owned=$(metric 18311 ringway_rooms_owned)
echo "n1 owns $owned rooms; draining it"
t0=$(date +%s%N)
kill -TERM $n1
last=0; stable=0; t_last=$t0
while [ $stable -lt 100 ]; do
  got=$(metric 18312 ringway_handoffs_received_total)
  now=$(date +%s%N)
  if [ "${got%.*}" != "$last" ]; then last=${got%.*}; t_last=$now; stable=0; else stable=$((stable+1)); fi
  sleep 0.01
done
echo "n2 received $last rooms; the last $(( (t_last - t0) / 1000000 )) ms after SIGTERM"
wait $n1 || true
