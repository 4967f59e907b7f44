#!/usr/bin/env bash
# Downloads MNIST's four IDX files into HOME_DIR/datasets/mnist (needs internet access).
# Usage: datasets/fetch_mnist.sh [BASE_URL]   (BASE_URL: a mirror holding the four .gz files)
set -euo pipefail
base=${1:?usage: fetch_mnist.sh BASE_URL (a mirror of the MNIST .gz files)}
dest=${HOME_DIR:-./var}/datasets/mnist
mkdir -p "$dest"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  curl -fL --retry 3 -o "$dest/$f.gz" "$base/$f.gz"
done
echo "MNIST in $dest"
