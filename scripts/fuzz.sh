#!/usr/bin/env bash
# Fuzz every parser that takes bytes from the network, for SECONDS each.
#
#   scripts/fuzz.sh 60                  # all targets, 60 s each
#   scripts/fuzz.sh 600 ws_frame token  # some targets
#
# Targets (tests/fuzz/fuzz_targets/, harnesses in tests/fuzz/harness.rs): ws_frame,
# handshake, client_protocol, mesh_wire, token, api_http, deflate_offer, inflate, segment. Needs a nightly toolchain (installed
# with rustup if missing) and cargo-fuzz (installed with cargo if missing). Each
# target starts from tests/fuzz/regressions/<target>/ plus its own growing corpus
# (tests/fuzz/corpus/, not committed). A crash is copied into
# tests/fuzz/regressions/<target>/ (commit it: `cargo test` replays it from then on,
# see tests/fuzz_regressions.rs) and the script exits 1.
set -euo pipefail
secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")/.."
F=tests/fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(ws_frame handshake client_protocol mesh_wire token api_http deflate_offer inflate segment)
fi
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

failed=0
for t in "${targets[@]}"; do
    mkdir -p "$F/corpus/$t" "$F/artifacts/$t"
    echo "==> fuzzing $t for ${secs}s"
    if ! cargo +nightly fuzz run --fuzz-dir "$F" "$t" "$F/corpus/$t" "$F/regressions/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 \
        -artifact_prefix="$F/artifacts/$t/" -print_final_stats=1 2>&1 | tail -n 25; then
        failed=1
    fi
    for crash in "$F/artifacts/$t"/crash-* "$F/artifacts/$t"/oom-* "$F/artifacts/$t"/timeout-*; do
        [ -e "$crash" ] || continue
        cp "$crash" "$F/regressions/$t/"
        echo "!! $t: $(basename "$crash") kept in tests/fuzz/regressions/$t/" >&2
        failed=1
    done
done
exit $failed
