#!/usr/bin/env bash
# The README's screenshot, taken by the app itself (--screenshot) in a virtual X display: the first
# preset, 4185 -> 5874, mid-walk. Needs Xvfb (Debian: xvfb) and a software renderer
# (mesa-vulkan-drivers or libgl1-mesa-dri). Usage: scripts/screenshot.sh [OUT.png] [STEP]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/screenshot.png}"
step="${2:-330}"
command -v Xvfb >/dev/null || { echo "Xvfb is required (apt-get install xvfb)" >&2; exit 1; }
cargo build --release
display="${XVFB_DISPLAY:-:$((90 + RANDOM % 9))}"
Xvfb "$display" -screen 0 1600x1000x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill "$xvfb"' EXIT
sleep 1
DISPLAY="$display" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" \
  target/release/dataleaf --fresh --preset 1 --screenshot "$out" --screenshot-step "$step"
# A palette of 256 colours keeps the picture sharp at a quarter of the bytes (pngquant, Debian: pngquant).
if command -v pngquant >/dev/null; then
  pngquant --quality=70-95 --speed 1 --force --output "$out" "$out"
fi
