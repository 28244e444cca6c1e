#!/usr/bin/env bash
# What permessage-deflate buys and costs in fan-out: 5,000 subscribers of one room,
# a realistic chat message (benches/payloads/chat.json) and a 4 KiB JSON document
# (document.json), each uncompressed, compressed once and shared (the default), and
# compressed for every subscriber (compression.shared = false, for the comparison
# only). Fresh nodes, the variants alternated, ROUNDS times. Prints each run's
# bytes on the wire and server CPU per delivery, p50/p99 latency, delivery and
# compression ratio.
#
#   usage: scripts/bench-compression.sh [ROUNDS] [RATE]     (defaults 2 and 20 msg/s)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2} rate=${2:-20}
case "$rounds$rate" in
  *[!0-9]*) echo "usage: scripts/bench-compression.sh [ROUNDS] [RATE]   (defaults 2 and 20 msg/s)" >&2; exit 2 ;;
esac
bin=${RINGWAY_BIN:-target/release/ringway}
[ -x "$bin" ] || cargo build --release
ws=127.0.0.1:18580 api=127.0.0.1:18581
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
printf '[compression]\nshared = false\n' >"$out/per-subscriber.toml"
: >"$out/none.toml"

node() { # config-file
  RINGWAY_LOG=warn "$bin" --config "$1" --listen $ws --api-listen $api --no-demo --rate-limit 0 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "http://$api/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench-compression: the node did not start" >&2; exit 1
}
stop() { kill -TERM "$pid" 2>/dev/null; sleep 0.3; kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; sleep 1; }

echo "payload variant round: wire B/delivery, server µs/delivery, p50 ms, p99 ms, delivered %, ratio"
for payload in chat document; do
  for round in $(seq "$rounds"); do
    for variant in plain shared per-subscriber; do
      case $variant in
        plain) cfg=$out/none.toml; flag= ;;
        shared) cfg=$out/none.toml; flag=--compress ;;
        per-subscriber) cfg=$out/per-subscriber.toml; flag=--compress ;;
      esac
      node "$cfg"
      timeout 180 "$bin" bench fanout --url "ws://$ws/ws" --api "$api" --pid "$pid" \
        --subscribers 5000 --rooms 1 --rate "$rate" --duration 10 \
        --payload "benches/payloads/$payload.json" $flag --json >"$out/run.json" 2>/dev/null || true
      python3 - "$out/run.json" "$payload" "$variant" "$round" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(f"{sys.argv[2]} {sys.argv[3]} {sys.argv[4]}: no result"); sys.exit(0)
d = r["deflate"]
ratio = d["bytes_in"] / d["bytes_out"] if d["bytes_out"] else 1.0
us = r["server_cpu_us_per_delivery"]
print(f'{sys.argv[2]} {sys.argv[3]} {sys.argv[4]}: {r["wire_bytes_per_delivery"]:.1f} B, '
      f'{us:.3f} µs, p50 {r["latency_ms"]["p50"]:.2f}, p99 {r["latency_ms"]["p99"]:.2f}, '
      f'{100 * r["delivered"] / max(r["expected"], 1):.2f}%, ratio {ratio:.2f}')
PY
      stop
    done
  done
done
