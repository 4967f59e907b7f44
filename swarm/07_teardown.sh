#!/usr/bin/env bash
# Step 7: remove the services and the network; with --leave also leave the swarm.
# HOME_DIR (models, checkpoints, the job journal) is kept.
set -euo pipefail
source "$(dirname "$0")/env.sh"
docker service rm ml_controller ml_train >/dev/null 2>&1 || true
# The secrets go with the services (in use, they cannot be removed: wait for the tasks to end).
# The API token file in MLSWARM_SECRETS_DIR stays, so a new deploy keeps the clients' token.
for _ in $(seq 1 30); do
  docker secret rm mlswarm_api_token mlswarm_cluster_token mlswarm_tls_cert mlswarm_tls_key >/dev/null 2>&1
  [[ -z $(docker secret ls -q -f name=mlswarm_) ]] && break
  sleep 1
done
for _ in $(seq 1 30); do docker network rm "$MLSWARM_NETWORK" >/dev/null 2>&1 && break; sleep 1; done
[[ ${1:-} != --leave ]] || docker swarm leave --force
