#!/usr/bin/env bash
# Makes a Docker engine usable here: installs docker.io (and debootstrap) when missing, starts
# dockerd in the background when no engine answers, and makes sure debian:bookworm-slim exists
# (built with debootstrap from this machine's own Debian mirror when no registry is reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh docker.io debootstrap iptables iproute2
if ! docker info >/dev/null 2>&1; then
  echo "ensure_engine: starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/mlswarm-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/mlswarm-dockerd.log" >&2; exit 1; }
fi
docker/ensure_base_image.sh
