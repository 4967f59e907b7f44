#!/usr/bin/env bash
# Used by the Dockerfiles' build stage: copies binaries and exactly the shared libraries they
# load (ldd's closure, symlinks resolved, each under the name the loader asks for) into a root
# file system for the runtime stage, so that an image carries no package it does not load.
#   docker/collect_runtime.sh ROOTFS BINARY...
set -euo pipefail
rootfs=$1
shift
mkdir -p "$rootfs/usr/local/bin"
for binary in "$@"; do
  install -m 0755 "$binary" "$rootfs/usr/local/bin/"
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
    target="$rootfs${lib/#\/lib\//\/usr\/lib\/}"  # merged /usr: /lib is /usr/lib
    mkdir -p "$(dirname "$target")"
    [[ -e $target ]] || cp -L "$lib" "$target"
  done
done
du -sh "$rootfs"
