#!/usr/bin/env bash
# Ensures the image debian:bookworm-slim exists. On an air-gapped engine (no registry) it is
# built with debootstrap --variant=minbase from the Debian mirror this machine's apt already
# uses, and `docker import`ed.
set -euo pipefail
image=${BASE_IMAGE:-debian:bookworm-slim}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "ensure_base_image: $image present"
  exit 0
fi
if timeout 60 docker pull "$image" >/dev/null 2>&1; then
  echo "ensure_base_image: pulled $image"
  exit 0
fi

# The mirror: the first bookworm (not -security/-updates) source of this machine's apt.
mirror=""
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  mirror=$(awk '
    /^URIs:/ { uris = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") found = 1 }
    /^$/ { if (found && uris != "") { print uris; exit } uris = ""; found = 0 }
    END { if (found && uris != "") print uris }' /etc/apt/sources.list.d/debian.sources | head -n1)
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
fi
[[ -n $mirror ]] || { echo "ensure_base_image: no bookworm mirror in this machine's apt sources" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "ensure_base_image: debootstrap bookworm from this machine's mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/mlswarm-debootstrap.log 2>&1 ||
  { tail -20 /tmp/mlswarm-debootstrap.log >&2; exit 1; }
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "ensure_base_image: imported $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
