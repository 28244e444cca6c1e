#!/usr/bin/env bash
# End-to-end tests of the browser client (ringway.js) in headless Chromium.
#
#   scripts/browser-test.sh
#
# Installs what it needs when missing: Debian's chromium (apt; browser downloads are
# not used), Node.js and npm (apt), and playwright-core (npm, into tests/browser/).
# Builds ringway, then runs tests/browser/run.mjs, which starts its own nodes on free
# loopback ports. The demo page's screenshot is written to target/browser/demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium fonts-liberation)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> installing ${need_apt[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "==> installing playwright-core"
    (cd tests/browser && npm install --no-audit --no-fund --loglevel=error)
fi
bin=${RINGWAY_BIN:-target/release/ringway}
[ -n "${RINGWAY_BIN:-}" ] || cargo build --release
echo "==> browser tests (chromium $(chromium --version 2>/dev/null | awk '{print $2}'))"
RINGWAY_BIN="$bin" CHROMIUM="$(command -v chromium)" node tests/browser/run.mjs
