#!/usr/bin/env bash
# Step 1: make this node a swarm manager and create the attachable overlay network with a
# private /24 that SUBNET_TRAIN names.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [[ $(docker info -f '{{.Swarm.LocalNodeState}}') != active ]]; then
  docker swarm init ${MLSWARM_ADVERTISE_ADDR:+--advertise-addr "$MLSWARM_ADVERTISE_ADDR"} >/dev/null
  echo "swarm initialised; join workers with: $(docker swarm join-token worker | grep 'docker swarm join')"
fi
docker network inspect "$MLSWARM_NETWORK" >/dev/null 2>&1 ||
  docker network create --driver overlay --attachable --subnet "$MLSWARM_SUBNET" "$MLSWARM_NETWORK" >/dev/null
echo "overlay network $MLSWARM_NETWORK ($MLSWARM_SUBNET) ready"
