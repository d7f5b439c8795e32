#!/usr/bin/env bash
# Trains the shipped Fashion-MNIST model: the papers' medium CNN and recipe (SGD lr 0.01, no momentum,
# batch 60, seed 42; shared/REFERENCE.md section 4) on the 60 000 Fashion-MNIST training images of
# the Debian package dataset-fashion-mnist (installed, or fetched with apt-get download), a checkpoint
# and its test accuracy per epoch; then ships epoch KEEP as assets/models/fashion-mnist-medium-cnn.*
# Usage: scripts/train-fashion.sh [EPOCHS [KEEP]]     (about 2 minutes an epoch on 2 quiet cores)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-6}"
keep="${2:-}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
train=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -e "$train" ]; then
  (cd "$work" && apt-get download dataset-fashion-mnist >/dev/null && dpkg-deb -x dataset-fashion-mnist_*.deb fm)
  train="$work/fm/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
fi
bin="${CARGO_TARGET_DIR:-target}/release/dataleaf"
cargo build --release
"$bin" train --dataset fashion-mnist --arch medium-cnn --epochs "$epochs" --train-data "$train" \
  --out checkpoints/fashion
if [ -n "$keep" ]; then
  e=$(printf '%02d' "$keep")
  cp "checkpoints/fashion/fashion-mnist-medium-cnn-e$e.json" assets/models/fashion-mnist-medium-cnn.json
  cp "checkpoints/fashion/fashion-mnist-medium-cnn-e$e.safetensors" assets/models/fashion-mnist-medium-cnn.safetensors
  "$bin" evaluate --model fashion-mnist-medium-cnn --dataset fashion-mnist
fi
