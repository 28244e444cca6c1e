#!/usr/bin/env bash
# Check the operations files with Prometheus's own tool:
#   - ops/alerts.yml with `promtool check rules`;
#   - every expression of ops/grafana-dashboard.json, as recording rules, the same way
#     (Grafana's $instance and $__rate_interval replaced by .* and 5m);
#   - a live node's /metrics with `promtool check metrics` (a node on free loopback
#     ports, with one mesh peer configured so the mesh families are there too).
#
#   usage: scripts/check-ops.sh
#
# Installs Debian's prometheus package if promtool is missing (as CI gets it). The
# node is ${CARGO_TARGET_DIR:-target}/release/ringway, built if missing. Lint findings
# of `promtool check metrics` that are listed in ops/promtool-lint-known.txt are
# reported but let the check pass; any other finding fails it. Exits non-zero on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C # one sort order for sort and comm

say() { printf '%s\n' "$*"; }
failures=()
fail() { say "FAIL  $*"; failures+=("$1"); }

if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    say "check-ops: promtool is missing: install it (apt-get install prometheus, as root) and run this again" >&2
    exit 1
  fi
  say "installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq prometheus >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }
fi
command -v python3 >/dev/null ||
  { say "check-ops: python3 is missing (it reads the dashboard's JSON): apt-get install python3" >&2; exit 1; }
say "$(promtool --version 2>&1 | head -n 1)"

work=$(mktemp -d)
node_pid=
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say
say "==> promtool check rules ops/alerts.yml"
if promtool check rules ops/alerts.yml; then :; else fail "ops/alerts.yml: promtool check rules (above)"; fi

say "==> the dashboard's expressions (ops/grafana-dashboard.json)"
if python3 - ops/grafana-dashboard.json >"$work/dashboard-rules.yml" <<'EOF'
import json, sys

def exprs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)

found = list(exprs(json.load(open(sys.argv[1]))))
if not found:
    sys.exit("no expressions found in " + sys.argv[1])
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(found):
    e = e.replace("$__rate_interval", "5m").replace("$instance", ".*")
    print(f"      - record: dashboard:expr_{i + 1}\n        expr: {json.dumps(e)}")
EOF
then
  if promtool check rules "$work/dashboard-rules.yml"; then :; else
    fail "ops/grafana-dashboard.json: an expression does not parse (above; rule N is the N-th expr in the file)"
  fi
else
  fail "ops/grafana-dashboard.json is not valid JSON, or has no expressions (above)"
fi

say "==> promtool check metrics on a node's /metrics"
bin="${CARGO_TARGET_DIR:-target}/release/ringway"
if [ ! -x "$bin" ]; then
  say "building $bin (cargo build --release)"
  cargo build --release
fi
# Four free loopback ports below the usual ephemeral range (nothing answers on them).
ports=()
for _ in $(seq 200); do
  p=$((20000 + RANDOM % 12000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && [[ " ${ports[*]} " != *" $p "* ]]; then
    ports+=("$p")
  fi
  [ "${#ports[@]}" -lt 4 ] || break
done
if [ "${#ports[@]}" -lt 4 ]; then
  fail "no four free ports on 127.0.0.1 in 20000-32000 after 200 tries: free some, or run this on a quieter host"
else
  api="127.0.0.1:${ports[1]}"
  RINGWAY_LOG=warn RINGWAY_MESH_SECRET="check-ops-$RANDOM$RANDOM$RANDOM" "$bin" \
    --listen "127.0.0.1:${ports[0]}" --api-listen "$api" --no-pin --workers 2 \
    --mesh-listen "127.0.0.1:${ports[2]}" --peer "n2=127.0.0.1:${ports[3]}" --drain-window 1 \
    >"$work/node.log" 2>&1 &
  node_pid=$!
  up=0
  for _ in $(seq 100); do # 10 s
    kill -0 "$node_pid" 2>/dev/null || break
    if curl -fsS --max-time 1 "http://$api/healthz" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  if [ "$up" -eq 0 ]; then
    sed 's/^/    /' "$work/node.log"
    fail "the node did not answer /healthz on $api within 10 s (its log is above)"
  elif ! curl -fsS --max-time 5 "http://$api/metrics" >"$work/metrics.txt"; then
    fail "GET http://$api/metrics failed"
  else
    say "$(grep -c '^# TYPE' "$work/metrics.txt") metric families from $bin"
    set +e
    promtool check metrics <"$work/metrics.txt" >"$work/lint.txt" 2>&1
    status=$?
    set -e
    sort -u "$work/lint.txt" >"$work/lint-unique.txt"
    sed '/^#/d; /^$/d' ops/promtool-lint-known.txt | sort -u >"$work/known.txt"
    new=$(comm -23 "$work/lint-unique.txt" "$work/known.txt")
    known=$(comm -12 "$work/lint-unique.txt" "$work/known.txt")
    gone=$(comm -13 "$work/lint-unique.txt" "$work/known.txt")
    [ -z "$known" ] || { say "known lint findings (ops/promtool-lint-known.txt):"; say "$known" | sed 's/^/    /'; }
    [ -z "$gone" ] || { say "no longer reported (remove them from ops/promtool-lint-known.txt):"; say "$gone" | sed 's/^/    /'; }
    if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
      sed 's/^/    /' "$work/lint.txt"
      fail "promtool check metrics could not parse /metrics (exit $status, above)"
    elif [ -n "$new" ]; then
      say "$new" | sed 's/^/    /'
      fail "promtool check metrics: new lint findings (above): fix the metric, or list the line in ops/promtool-lint-known.txt with the reason"
    else
      say "metrics parse; no new lint findings"
    fi
  fi
fi

say
if [ "${#failures[@]}" -eq 0 ]; then
  say "check-ops: OK"
else
  say "check-ops: FAILED (${#failures[@]}):"
  for f in "${failures[@]}"; do say "  - $f"; done
  exit 1
fi
