#!/usr/bin/env bash
# How long a drain takes to hand N rooms to the other nodes: NODES nodes on this
# machine (2 or 3), N rooms created through n1's API (about 1/NODES are n1's),
# SIGTERM n1, and the others' ringway_handoffs_received_total polled every 10 ms
# until it stops growing. With 3 nodes the rooms are replicated (mesh.replicate):
# each new owner also wins the next term and seeds a new standby, so the script
# also reports when no room is left without a standby.
# Usage: scripts/bench-handoff.sh [ROOMS] [NODES]   (defaults 20000 and 2)
set -euo pipefail
rooms=${1:-20000} nodes=${2:-2}
case "$nodes" in 2|3) ;; *) echo "usage: scripts/bench-handoff.sh [ROOMS] [NODES=2|3]" >&2; exit 2 ;; esac
bin=${RINGWAY_BIN:-target/release/ringway}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
common=(--mesh-secret bench-handoff-secret-0123456789 --workers 2 --no-pin --rate-limit 0)
peers() { for j in $(seq "$nodes"); do [ "$j" = "$1" ] || echo "--peer n$j=127.0.0.1:1832$j"; done; }
for i in $(seq "$nodes"); do
  # shellcheck disable=SC2046
  RINGWAY_LOG=warn "$bin" --node-id "n$i" --listen "127.0.0.1:1830$i" --api-listen "127.0.0.1:1831$i" \
    --mesh-listen "127.0.0.1:1832$i" $(peers "$i") "${common[@]}" >"$dir/n$i.log" 2>&1 &
  [ "$i" = 1 ] && n1=$!
done
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m"({|$)" {s+=$2} END {print s+0}'; }
linked() { [ "$(curl -s http://127.0.0.1:18311/v1/cluster | grep -o '"up":true' | wc -l)" = $((nodes - 1)) ]; }
for _ in $(seq 100); do
  linked && [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18312/readyz)" = 200 ] && break
  sleep 0.1
done
linked || { echo "the nodes did not link (ports 18301-1832$nodes busy?); see $dir" >&2; exit 1; }
others() { for i in $(seq 2 "$nodes"); do echo "1831$i"; done; }
sum() { local t=0; for p in $(others); do t=$(( t + $(metric "$p" "$1" | cut -d. -f1) )); done; echo $t; }
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
last=0; stable=0; t_last=$t0; t_replicated=
while [ $stable -lt 100 ]; do
  got=$(sum ringway_handoffs_received_total)
  now=$(date +%s%N)
  if [ "$got" != "$last" ]; then last=$got; t_last=$now; stable=0; t_replicated=; else stable=$((stable+1)); fi
  if [ "$nodes" = 3 ] && [ -z "$t_replicated" ] && [ "$got" -gt 0 ] && [ "$(sum ringway_rooms_unreplicated)" = 0 ]; then
    t_replicated=$now
  fi
  sleep 0.01
done
echo "the other nodes received $last rooms; the last $(( (t_last - t0) / 1000000 )) ms after SIGTERM"
if [ "$nodes" = 3 ]; then
  [ -n "$t_replicated" ] && echo "every room had a standby again $(( (t_replicated - t0) / 1000000 )) ms after SIGTERM" \
    || echo "some rooms were still without a standby: $(sum ringway_rooms_unreplicated)"
fi
wait $n1 || true
