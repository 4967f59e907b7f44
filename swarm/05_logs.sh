#!/usr/bin/env bash
# Step 5: follow the logs of a service (ml_controller by default, or ml_train).
set -euo pipefail
docker service logs --follow --tail 100 "${1:-ml_controller}"
