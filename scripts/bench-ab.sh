#!/usr/bin/env bash
# Compare two ringway binaries on the same machine, alternating fresh nodes so noise
# hits both alike: idle bytes per connection, fan-out latency at two rates, and
# handshakes per second. Prints one line per run and the medians.
#
#   usage: scripts/bench-ab.sh BIN_A BIN_B [ROUNDS]     (ROUNDS default 3)
#
# The load generator is BIN_B's `ringway bench` (the same one for both). Needs the
# source addresses 127.0.0.2-127.0.0.9 (loopback has them all on Linux). Each step is
# bounded in time; the whole run takes about ROUNDS x 2 x 90 s.
set -euo pipefail
a="${1:?usage: $0 BIN_A BIN_B [ROUNDS]}" b="${2:?usage: $0 BIN_A BIN_B [ROUNDS]}"
rounds="${3:-3}"
bench="$b"
ws=127.0.0.1:18480 api=127.0.0.1:18481
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

node() { # bin extra-flags...
  local bin=$1; shift
  RINGWAY_LOG=warn "$bin" --listen $ws --api-listen $api --no-demo "$@" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "http://$api/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench-ab: $bin did not start" >&2; exit 1
}
stop() { kill -TERM "$pid" 2>/dev/null; sleep 0.2; kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; sleep 1; }

run() { # label bin
  local label=$1 bin=$2 j
  node "$bin" --rate-limit 0
  j=$(timeout 120 "$bench" bench idle --url ws://$ws/ws --api $api --connections 15000 --procs 3 \
      --source 127.0.0.2-127.0.0.7 --json 2>/dev/null | tail -1)
  echo "$label idle $j" >>"$out/log"
  stop
  for rate in 200 400; do
    node "$bin" --rate-limit 0
    j=$(timeout 120 "$bench" bench fanout --url ws://$ws/ws --api $api --subscribers 5000 \
        --rate $rate --duration 5 --source 127.0.0.2-127.0.0.7 --json 2>/dev/null | tail -1)
    echo "$label fanout$rate $j" >>"$out/log"
    stop
  done
  node "$bin" --rate-limit 0
  j=$(timeout 120 "$bench" bench connect --url ws://$ws/ws --api $api --connections 15000 \
      --source 127.0.0.2-127.0.0.9 --pid "$pid" --json 2>/dev/null | tail -1)
  echo "$label connect $j" >>"$out/log"
  stop
}

for r in $(seq "$rounds"); do
  if (( r % 2 )); then run A "$a"; run B "$b"; else run B "$b"; run A "$a"; fi
done

python3 - "$out/log" <<'EOF'
import json, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    label, kind, js = line.split(" ", 2)
    try:
        v = json.loads(js)
    except ValueError:
        continue
    rows.setdefault((label, kind), []).append(v)
def med(xs):
    return statistics.median(xs) if xs else float("nan")
def show(kind, name, get, fmt):
    for label in "AB":
        vals = [get(v) for v in rows.get((label, kind), []) if get(v) is not None]
        print(f"{name:40s} {label}: median {fmt(med(vals))}  runs {[fmt(x) for x in vals]}")
show("idle", "idle user RSS per connection (B)", lambda v: v.get("server_rss_per_connection"), lambda x: f"{x:.0f}")
for rate, m in (("200", "1M/s"), ("400", "2M/s")):
    show("fanout" + rate, f"fanout {m} p50 (ms)", lambda v: v["latency_ms"]["p50"], lambda x: f"{x:.1f}")
    show("fanout" + rate, f"fanout {m} p99 (ms)", lambda v: v["latency_ms"]["p99"], lambda x: f"{x:.1f}")
    show("fanout" + rate, f"fanout {m} delivered %", lambda v: 100 * v["delivered"] / max(1, v["expected"]), lambda x: f"{x:.2f}")
show("connect", "handshakes/s", lambda v: v.get("handshakes_per_sec"), lambda x: f"{x:.0f}")
show("connect", "server CPU per handshake (us)", lambda v: v.get("server_cpu_us_per_handshake"), lambda x: f"{x:.1f}")
EOF
cat "$out/log" >&2
