#!/usr/bin/env bash
# Downloads and unpacks CIFAR-10's binary version into HOME_DIR/datasets/cifar10 (needs
# internet access). Usage: datasets/fetch_cifar10.sh URL_OF_cifar-10-binary.tar.gz
set -euo pipefail
url=${1:?usage: fetch_cifar10.sh URL_OF_cifar-10-binary.tar.gz}
dest=${HOME_DIR:-./var}/datasets/cifar10
mkdir -p "$dest"
curl -fL --retry 3 "$url" | tar -xz -C "$dest"
ls "$dest"/cifar-10-batches-bin
