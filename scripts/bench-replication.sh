#!/usr/bin/env bash
# What standbys cost (mesh.replicate): a 3-node cluster on this machine (one worker
# each), replication on and off, alternated, ROUNDS times, fresh nodes each run.
#
# Each run measures, through n1:
#   - publish-to-ack: 1,000 sequential POST /v1/publish to rooms owned by n2 and
#     n3 (the answer comes once the standby has the message), p50/p99 in ms;
#   - publish-to-delivery: `ringway bench fanout`, RATE msg/s over 100 rooms, 300
#     subscribers spread over the three nodes, p50/p99 in ms and delivery;
#   - one room's ceiling: `ringway bench fanout` to a single room (10 subscribers)
#     at MAX msg/s offered, the deliveries per second achieved and delivery.
#
#   usage: scripts/bench-replication.sh [ROUNDS] [RATE] [MAX]   (defaults 2, 5000, 60000)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2} rate=${2:-5000} max=${3:-60000}
case "$rounds$rate$max" in
  *[!0-9]*) echo "usage: scripts/bench-replication.sh [ROUNDS] [RATE] [MAX]" >&2; exit 2 ;;
esac
bin=${RINGWAY_BIN:-target/release/ringway}
[ -x "$bin" ] || cargo build --release
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
export RINGWAY_MESH_SECRET=bench-replication-secret-0123456789

ws() { echo "127.0.0.1:$((18700 + $1))"; }
api() { echo "127.0.0.1:$((18710 + $1))"; }
mesh() { echo "127.0.0.1:$((18720 + $1))"; }

pids=()
start() { # replicate: true|false
  printf '[mesh]\nreplicate = %s\n' "$1" >"$out/cfg.toml"
  pids=()
  for i in 1 2 3; do
    peers=()
    for j in 1 2 3; do
      [ "$j" = "$i" ] || peers+=(--peer "n$j=$(mesh $j)")
    done
    RINGWAY_LOG=warn "$bin" --config "$out/cfg.toml" --node-id "n$i" --listen "$(ws $i)" \
      --api-listen "$(api $i)" --mesh-listen "$(mesh $i)" "${peers[@]}" --no-demo \
      --rate-limit 0 --workers 1 --no-pin --drain-window 1 >"$out/n$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 200); do
    up=0
    for i in 1 2 3; do
      c=$(curl -fs --max-time 1 "http://$(api $i)/v1/cluster" 2>/dev/null | grep -o '"up":true' | wc -l || true)
      [ "$c" = 2 ] && up=$((up + 1))
    done
    [ "$up" = 3 ] && return 0
    sleep 0.1
  done
  echo "bench-replication: the cluster did not link:" >&2; tail -n 5 "$out"/n*.log >&2; exit 1
}
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  sleep 0.5
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  sleep 1
}

ack_latency() { # prints "p50 p99" in ms of sequential publishes through n1
  python3 - "$(api 1)" <<'EOF'
import http.client, json, sys, time
host, port = sys.argv[1].split(":")
c = http.client.HTTPConnection(host, int(port))
lat = []
for i in range(1000):
    body = json.dumps({"room": f"ack:{i % 50}", "data": {"i": i}})
    t = time.perf_counter()
    c.request("POST", "/v1/publish", body, {"content-type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status == 200:
        lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print(f"{lat[len(lat)//2]:.3f} {lat[int(len(lat)*0.99)]:.3f} ({len(lat)} acked)")
EOF
}

fanout() { # rooms subscribers rate -> the bench's summary lines
  "$bin" bench fanout --url "ws://$(ws 1)/ws" --api "$(api 1)" \
    --nodes "ws://$(ws 1)/ws,ws://$(ws 2)/ws,ws://$(ws 3)/ws" \
    --rooms "$1" --subscribers "$2" --rate "$3" --duration 8 2>&1 |
    grep -E 'expected|latency ms' | tr '\n' ' '
  echo
}

for round in $(seq "$rounds"); do
  for replicate in true false; do
    start "$replicate"
    echo "== replicate=$replicate round $round"
    echo "  publish-to-ack p50/p99 ms: $(ack_latency)"
    echo "  fan-out ${rate}/s, 100 rooms: $(fanout 100 300 "$rate")"
    echo "  one room at ${max}/s: $(fanout 1 10 "$max")"
    for i in 1 2 3; do
      echo "  n$i: $(curl -fs "http://$(api $i)/metrics" | awk '/^ringway_rooms_replicated |^ringway_replica_copies |^ringway_replica_elections_total /{printf "%s=%s ", $1, $2}')"
    done
    stop
  done
done
