#!/usr/bin/env bash
# The README's plane screenshot, taken by the app itself (--screenshot) in a virtual X display: a ReLU
# network trained 200 Adam steps on two moons, the curves through (0.25, 0.75) and the preimage of
# p in [0.3, 0.7]. Needs Xvfb and a software renderer, as scripts/screenshot.sh.
# Usage: scripts/plane-screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/plane.png}"
command -v Xvfb >/dev/null || { echo "Xvfb is required (apt-get install xvfb)" >&2; exit 1; }
cargo build --release
display="${XVFB_DISPLAY:-:$((90 + RANDOM % 9))}"
Xvfb "$display" -screen 0 1600x1000x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill "$xvfb"' EXIT
sleep 1
DISPLAY="$display" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" \
  "${CARGO_TARGET_DIR:-target}/release/dataleaf" --fresh --plane --plane-train-steps 200 \
  --plane-click=0.25,0.75 --plane-interval 0.3,0.7 --screenshot "$out"
# A palette of 256 colours keeps the picture sharp at a quarter of the bytes (pngquant, Debian: pngquant).
if command -v pngquant >/dev/null; then
  pngquant --quality=70-95 --speed 1 --force --output "$out" "$out"
fi
