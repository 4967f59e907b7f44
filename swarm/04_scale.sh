#!/usr/bin/env bash
# Step 4: scale the trainers: swarm/04_scale.sh 8
set -euo pipefail
docker service scale --detach ml_train="${1:?usage: 04_scale.sh REPLICAS}"
