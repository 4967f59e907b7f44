#!/usr/bin/env bash
# Step 7: remove the services and the network; with --leave also leave the swarm.
# HOME_DIR (models, checkpoints, the job journal) is kept.
set -euo pipefail
source "$(dirname "$0")/env.sh"
docker service rm ml_controller ml_train >/dev/null 2>&1 || true
for _ in $(seq 1 30); do docker network rm "$MLSWARM_NETWORK" >/dev/null 2>&1 && break; sleep 1; done
[[ ${1:-} != --leave ]] || docker swarm leave --force
