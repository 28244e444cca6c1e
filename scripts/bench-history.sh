#!/usr/bin/env bash
# What keeping history on disk (rooms.data_dir) costs: one publisher stamping RATE
# messages a second over 200 rooms (one subscriber each), on one worker, with the
# log off and with each fsync policy. Fresh nodes, the variants alternated, ROUNDS
# times. Prints each run's publish-to-delivery p50/p99, delivery, server CPU per
# message, and the log's records, bytes and syncs per second and time per sync.
#
#   usage: scripts/bench-history.sh [ROUNDS] [RATE]     (defaults 2 and 20000 msg/s)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2} rate=${2:-20000}
case "$rounds$rate" in
  *[!0-9]*) echo "usage: scripts/bench-history.sh [ROUNDS] [RATE]   (defaults 2 and 20000 msg/s)" >&2; exit 2 ;;
esac
bin=${RINGWAY_BIN:-target/release/ringway}
[ -x "$bin" ] || cargo build --release
ws=127.0.0.1:18590 api=127.0.0.1:18591
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
duration=10

node() { # extra flags...
  rm -rf "$out/data"
  RINGWAY_LOG=warn "$bin" --listen $ws --api-listen $api --no-demo --rate-limit 0 --workers 1 "$@" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "http://$api/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench-history: the node did not start" >&2; exit 1
}
stop() { kill -TERM "$pid" 2>/dev/null; sleep 0.3; kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; sleep 1; }
metric() { curl -fs "http://$api/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

echo "variant round: p50 ms, p99 ms, delivered %, server µs/message | records/s, MB/s, syncs/s, ms/sync"
for round in $(seq "$rounds"); do
  for variant in memory never interval always; do
    case $variant in
      memory) node ;;
      *) printf '[rooms]\nfsync = "%s"\n' "$variant" >"$out/cfg.toml"
         node --config "$out/cfg.toml" --data-dir "$out/data" ;;
    esac
    timeout 120 "$bin" bench fanout --url "ws://$ws/ws" --api "$api" --pid "$pid" --threads 1 \
      --subscribers 200 --rooms 200 --rate "$rate" --duration $duration --json >"$out/run.json" 2>/dev/null || true
    records=$(metric ringway_store_records_total) bytes=$(metric ringway_store_bytes_written_total)
    syncs=$(metric ringway_store_fsyncs_total) sync_s=$(metric ringway_store_fsync_seconds_total)
    stop
    python3 - "$out/run.json" "$variant" "$round" "${records:-0}" "${bytes:-0}" "${syncs:-0}" "${sync_s:-0}" "$duration" <<'PY'
import json, sys
name = f"{sys.argv[2]} {sys.argv[3]}"
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(f"{name}: no result"); sys.exit(0)
records, nbytes, syncs, sync_s, secs = map(float, sys.argv[4:9])
us = r["server_cpu_us_per_delivery"]
store = ""
if records:
    per_sync = 1000 * sync_s / syncs if syncs else 0
    store = f" | {records / secs:,.0f} rec/s, {nbytes / secs / 1e6:.2f} MB/s, {syncs / secs:,.1f} syncs/s, {per_sync:.3f} ms/sync"
print(f'{name}: p50 {r["latency_ms"]["p50"]:.2f}, p99 {r["latency_ms"]["p99"]:.2f}, '
      f'{100 * r["delivered"] / max(r["expected"], 1):.2f}%, {us:.2f} µs{store}')
PY
  done
done
