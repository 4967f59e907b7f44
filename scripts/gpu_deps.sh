#!/usr/bin/env bash
# Downloads (apt-get download, nothing installed) the Debian packages that scripts/gpu_check.sh
# builds with on a GPU machine that has a CUDA LibTorch but no package archive: every library
# mlswarm uses apart from LibTorch, GoogleTest, and Fashion-MNIST for the benchmark.
# They land in DEPS_DIR/debs (default .deps/debs, git-ignored; about 50 MB); carry DEPS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
debs=${DEPS_DIR:-.deps}/debs
packages=(
  libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev libbrotli1 nlohmann-json3-dev libfmt-dev libfmt9
  libspdlog-dev libspdlog1.10 libcli11-dev libstb-dev libstb0 libturbojpeg0-dev libturbojpeg0
  libjpeg62-turbo zlib1g-dev libssl-dev libssl3 libboost1.74-dev libgloo-dev libgloo0 libibverbs1
  libgtest-dev googletest dataset-fashion-mnist pkgconf pkgconf-bin libpkgconf3
)
mkdir -p "$debs"
cd "$debs"
missing=()
for p in "${packages[@]}"; do
  compgen -G "${p}_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  apt-get download "${missing[@]}"
fi
echo "gpu_deps: ${#packages[@]} packages in $debs ($(du -sh . | cut -f1))"
