#!/usr/bin/env bash
# Step 6: rolling update of the trainers, one replica at a time, the new one started first;
# each old replica gets SIGTERM, checkpoints its jobs and exits, and the controller resumes them
# elsewhere. Rebuild first (02_build.sh) to roll out new code; without a new image the tasks are
# restarted all the same (--force).
set -euo pipefail
source "$(dirname "$0")/env.sh"
docker service update --detach --force --update-order start-first --update-parallelism 1 \
  --image "$TRAIN_IMAGE" ml_train
