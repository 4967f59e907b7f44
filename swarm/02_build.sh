#!/usr/bin/env bash
# Step 2: build both images (and push them when MLSWARM_REGISTRY is set, so that other
# nodes can pull them). Prints each image's size and build time.
set -euo pipefail
cd "$(dirname "$0")/.."
source swarm/env.sh
docker/ensure_base_image.sh
for kind in train controller; do
  image=$([[ $kind == train ]] && echo "$TRAIN_IMAGE" || echo "$CONTROLLER_IMAGE")
  start=$SECONDS
  docker build -q -f "Dockerfile_$kind" --build-arg MLSWARM_GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || true)" \
    -t "$image" . >/dev/null
  echo "built $image in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
  [[ -z $MLSWARM_REGISTRY ]] || docker push "$image"
done
