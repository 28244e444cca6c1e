#!/usr/bin/env bash
# Start an N-node ringway cluster on this machine, print its URLs, and stop it on
# Ctrl-C (or SIGTERM).
#
#   scripts/cluster-local.sh 3                 # nodes n1..n3
#   scripts/cluster-local.sh 4 --rate-limit 0  # extra flags go to every node
#
# Node i (1-based) listens for clients on 127.0.0.1:(8100+i), its API on
# 127.0.0.1:(8200+i) and for peers on 127.0.0.1:(7400+i); change the bases with
# WS_BASE, API_BASE, MESH_BASE. The mesh secret is RINGWAY_MESH_SECRET, or a fresh
# random one. Logs go to ${LOG_DIR:-/tmp/ringway-cluster}/nI.log. The binary is
# $RINGWAY_BIN, or ${CARGO_TARGET_DIR:-target}/release/ringway (built if missing).
# A node that cannot start (a bad flag, a port in use) stops the cluster at once,
# with the end of its log, and the script exits 1.
set -euo pipefail

n="${1:-}"
if ! [[ "$n" =~ ^[0-9]+$ ]] || (( n < 1 || n > 64 )); then
    echo "usage: $0 N [ringway flags...]   (N = 1..64 nodes)" >&2
    exit 2
fi
shift
cd "$(dirname "$0")/.."
if [[ -n "${RINGWAY_BIN:-}" ]]; then
    bin=$RINGWAY_BIN
    if [[ ! -x "$bin" ]]; then
        echo "RINGWAY_BIN=$bin is not an executable file: point it at a built ringway, or unset it to use ${CARGO_TARGET_DIR:-target}/release/ringway" >&2
        exit 1
    fi
else
    bin="${CARGO_TARGET_DIR:-target}/release/ringway"
    if [[ ! -x "$bin" ]]; then
        cargo build --release
    fi
    if [[ ! -x "$bin" ]]; then
        echo "cargo build --release did not produce $bin: set CARGO_TARGET_DIR to the target directory cargo uses" >&2
        exit 1
    fi
fi
ws_base="${WS_BASE:-8100}" api_base="${API_BASE:-8200}" mesh_base="${MESH_BASE:-7400}"
log_dir="${LOG_DIR:-/tmp/ringway-cluster}"
mkdir -p "$log_dir"
export RINGWAY_MESH_SECRET="${RINGWAY_MESH_SECRET:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}"

pids=()
# Stop every node (SIGTERM: each drains, 2 s unless a flag says otherwise; whatever
# still runs after 10 s gets SIGKILL), then exit with status $1.
stop() {
    trap - INT TERM
    echo "stopping ${#pids[@]} nodes"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((t = 0; t < 100; t++)); do
        alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        (( alive )) || break
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    exit "$1"
}
trap 'echo; stop 0' INT TERM

# Exit 1 with the end of its log if a node has died.
check_alive() {
    for ((i = 1; i <= ${#pids[@]}; i++)); do
        if ! kill -0 "${pids[i - 1]}" 2>/dev/null; then
            echo "n$i exited at start-up; the end of $log_dir/n$i.log:" >&2
            tail -n 20 "$log_dir/n$i.log" | sed 's/^/    /' >&2
            stop 1
        fi
    done
}

for ((i = 1; i <= n; i++)); do
    peers=()
    for ((j = 1; j <= n; j++)); do
        (( j == i )) || peers+=(--peer "n$j=127.0.0.1:$((mesh_base + j))")
    done
    "$bin" --node-id "n$i" \
        --listen "127.0.0.1:$((ws_base + i))" \
        --api-listen "127.0.0.1:$((api_base + i))" \
        --mesh-listen "127.0.0.1:$((mesh_base + i))" \
        "${peers[@]}" --no-pin --drain-window 2 "$@" \
        >"$log_dir/n$i.log" 2>&1 &
    pids+=($!)
done

# Wait until every node sees all its peers (or give up after 20 s), stopping at once
# if a node dies.
for ((t = 0; t < 200; t++)); do
    check_alive
    up=0
    for ((i = 1; i <= n; i++)); do
        command -v curl >/dev/null || { sleep 2; up=$n; break; }
        c=$(curl -fsS --max-time 1 "http://127.0.0.1:$((api_base + i))/v1/cluster" 2>/dev/null | grep -o '"up":true' | wc -l || true)
        (( c == n - 1 )) && up=$((up + 1))
    done
    (( up == n )) && break
    sleep 0.1
done
check_alive
for ((i = 1; i <= n; i++)); do
    echo "n$i  ws://127.0.0.1:$((ws_base + i))/ws  api http://127.0.0.1:$((api_base + i))  mesh 127.0.0.1:$((mesh_base + i))  log $log_dir/n$i.log"
done
if (( up == n )); then
    echo "cluster of $n nodes up; Ctrl-C stops it"
else
    echo "warning: only $up of $n nodes see all their peers; check the logs" >&2
fi
wait "${pids[@]}"
