#!/usr/bin/env bash
# Conformance: run the Autobahn|Testsuite against a ringway node's /echo endpoint and
# compare the outcome with the committed expectations (scripts/autobahn-expected.txt).
#
#   usage: scripts/autobahn.sh [CASES] [EXCLUDE]      (defaults: every case, none left out)
#
# Every case runs, the compression cases (12.*, 13.*: permessage-deflate) included.
# The node runs with 20 MB message and frame limits because the 9.* cases echo
# messages of up to 16 MiB (ringway's default limit is 1 MiB).
# Exit status: 0 when no case FAILED and every non-OK case is an expected one.
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${1:-*}
EXCLUDE=${2-}
TOOL=${AUTOBAHN_TOOL:-../shared/tools/autobahn.sh}
BIN=${RINGWAY_BIN:-target/release/ringway}
[ -f "$TOOL" ] || { echo "autobahn: $TOOL not found (set AUTOBAHN_TOOL)" >&2; exit 2; }
[ -x "$BIN" ] || cargo build --release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WS=$(free_port); API=$(free_port)
log=$(mktemp)
"$BIN" --echo --listen "127.0.0.1:$WS" --api-listen "127.0.0.1:$API" \
  --max-message-size 20000000 --max-frame-size 20000000 >"$log" 2>&1 &
node=$!
trap 'kill $node 2>/dev/null || true; wait $node 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$API/healthz')" 2>/dev/null && break
  kill -0 $node 2>/dev/null || { echo "autobahn: ringway exited:" >&2; cat "$log" >&2; exit 2; }
  sleep 0.1
done

out=$(mktemp)
set +e
bash "$TOOL" "ws://127.0.0.1:$WS/echo" "$CASES" "$EXCLUDE" | tee "$out"
status=${PIPESTATUS[0]}
set -e
kill -0 $node 2>/dev/null || { echo "autobahn: ringway died during the run:" >&2; cat "$log" >&2; exit 1; }
[ "$status" -eq 0 ] || exit "$status"

report=$(sed -n 's/^report: \(.*\)\/index.html$/\1/p' "$out")
python3 - "$report/index.json" scripts/autobahn-expected.txt <<'PY'
import json, sys
results = next(iter(json.load(open(sys.argv[1])).values()))
seen = {f"{case} {r['behavior']}" for case, r in results.items() if r["behavior"] != "OK"}
expected = {l.split("#")[0].strip() for l in open(sys.argv[2])} - {""}
ran = set(results)
expected = {e for e in expected if e.split()[0] in ran}
new, gone = sorted(seen - expected), sorted(expected - seen)
for n in new:
    print(f"autobahn: unexpected: {n}")
for g in gone:
    print(f"autobahn: now OK (remove from scripts/autobahn-expected.txt): {g}")
sys.exit(1 if new else 0)
PY
echo "autobahn: conformance as expected"
