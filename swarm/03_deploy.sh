#!/usr/bin/env bash
# Step 3: create the services exactly as users do: N trainer replicas on the overlay, and
# MLSWARM_CONTROLLERS controller replicas publishing port 48515. HOME_DIR is a bind mount of
# MLSWARM_HOME (on a multi-node swarm, a shared file system mounted at the same path on every
# node). The tokens and the optional TLS pair are Docker secrets (swarm/secrets.sh); nothing
# secret is in an image, an environment variable or a log line.
#   swarm/03_deploy.sh [all|train|controller]     (default all)
# Controller updates are rolling and health-gated: one replica at a time, the new one started
# (and healthy) before the old one gets SIGTERM and drains (DRAIN_MS), rolled back when a new
# replica fails. With host publishing two replicas cannot share a node's port, so there at
# most one replica runs per node and an update stops the old one first (the other replicas
# keep serving).
set -euo pipefail
source "$(dirname "$0")/env.sh"
what=${1:-all}
case $what in all | train | controller) ;; *) echo "usage: 03_deploy.sh [all|train|controller]" >&2; exit 2 ;; esac
mkdir -p "$MLSWARM_HOME"
# The images run as uid 10001 (group 0): let it write the shared folder.
if [[ $(id -u) -eq 0 ]]; then chown 10001:0 "$MLSWARM_HOME"; chmod 0775 "$MLSWARM_HOME"; else chmod 0777 "$MLSWARM_HOME"; fi
mount="type=bind,source=$MLSWARM_HOME,target=/home"
source "$(dirname "$0")/secrets.sh"
train_args=()
if ((MLSWARM_TRAINER_GPUS > 0)); then train_args=(--generic-resource "$MLSWARM_GPU_KIND=$MLSWARM_TRAINER_GPUS"); fi
[[ -z $MLSWARM_TRAINER_CONSTRAINT ]] || train_args+=(--constraint "$MLSWARM_TRAINER_CONSTRAINT")
if [[ $what != controller ]]; then
  docker service create --detach --quiet --no-resolve-image --name ml_train --network "$MLSWARM_NETWORK" \
    --replicas "$MLSWARM_TRAINERS" --mount "$mount" --stop-grace-period 60s --env TRAIN_WORKERS="$MLSWARM_TRAIN_WORKERS" \
    --update-order start-first --update-parallelism 1 "${train_args[@]}" "${TRAINER_SECRET_ARGS[@]}" "$TRAIN_IMAGE" >/dev/null
  echo "service ml_train created ($MLSWARM_TRAINERS replicas$( ((MLSWARM_TRAINER_GPUS > 0)) && echo ", each reserving $MLSWARM_TRAINER_GPUS $MLSWARM_GPU_KIND")${MLSWARM_TRAINER_CONSTRAINT:+, on nodes where $MLSWARM_TRAINER_CONSTRAINT})"
fi
[[ $what == train ]] && exit 0

controller_args=(--replicas "$MLSWARM_CONTROLLERS" --endpoint-mode "$MLSWARM_ENDPOINT_MODE"
  --update-parallelism 1 --update-delay 2s --update-monitor 10s --update-failure-action rollback
  --rollback-parallelism 1 --rollback-order start-first
  --health-interval 2s --health-timeout 5s --health-retries 3 --health-start-period 10s
  --stop-grace-period 30s)
[[ -z $MLSWARM_CONTROLLER_CONSTRAINT ]] || controller_args+=(--constraint "$MLSWARM_CONTROLLER_CONSTRAINT")
case $MLSWARM_PUBLISH_MODE in
  none) controller_args+=(--update-order start-first) ;;
  host) controller_args+=(--publish "mode=host,published=$MLSWARM_PORT,target=48515"
          --replicas-max-per-node 1 --update-order stop-first) ;;
  *) controller_args+=(--publish "mode=$MLSWARM_PUBLISH_MODE,published=$MLSWARM_PORT,target=48515"
       --update-order start-first) ;;
esac
docker service create --detach --quiet --no-resolve-image --name ml_controller --network "$MLSWARM_NETWORK" \
  "${controller_args[@]}" --mount "$mount" \
  --env SUBNET_TRAIN="$MLSWARM_SUBNET" --env PREDICT_THREADS="$MLSWARM_PREDICT_THREADS" ${MLSWARM_TRAIN_DNS:+--env TRAIN_DNS="$MLSWARM_TRAIN_DNS"} \
  "${CONTROLLER_SECRET_ARGS[@]}" "$CONTROLLER_IMAGE" >/dev/null
if [[ $MLSWARM_PUBLISH_MODE == none ]]; then
  echo "service ml_controller created ($MLSWARM_CONTROLLERS replicas, $MLSWARM_ENDPOINT_MODE, on the overlay only)"
  exit 0
fi
echo "service ml_controller created ($MLSWARM_CONTROLLERS replicas, $MLSWARM_ENDPOINT_MODE, port $MLSWARM_PORT)"
scheme=$([[ -n $MLSWARM_TLS_CERT ]] && echo "https" || echo "http")
if [[ $MLSWARM_AUTH == on ]]; then
  echo "watch: curl -s${MLSWARM_TLS_CERT:+k} -H \"Authorization: Bearer \$(cat $MLSWARM_SECRETS_DIR/api_token)\" $scheme://localhost:$MLSWARM_PORT/status"
else
  echo "watch: curl -s${MLSWARM_TLS_CERT:+k} $scheme://localhost:$MLSWARM_PORT/status"
fi
