#!/usr/bin/env bash
# Step 6: rolling updates, one replica at a time.
#   swarm/06_update.sh [train|controller|all]     (default train)
# Trainers: the new replica starts first; each old one gets SIGTERM, checkpoints its jobs and
# exits, and the controller resumes them elsewhere. Controllers: with the update settings of
# 03_deploy.sh (health-gated, rolled back on failure); an old replica drains for DRAIN_MS and
# gives up the lead, another replica takes it within the lease. Rebuild first (02_build.sh) to
# roll out new code; without a new image the tasks are restarted all the same (--force).
set -euo pipefail
source "$(dirname "$0")/env.sh"
what=${1:-train}
case $what in all | train | controller) ;; *) echo "usage: 06_update.sh [train|controller|all]" >&2; exit 2 ;; esac
if [[ $what != controller ]]; then
  docker service update --detach --force --update-order start-first --update-parallelism 1 \
    --image "$TRAIN_IMAGE" ml_train
fi
if [[ $what != train ]]; then
  docker service update --detach --force --image "$CONTROLLER_IMAGE" ml_controller
fi
