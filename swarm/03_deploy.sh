#!/usr/bin/env bash
# Step 3: create the services exactly as users do: N trainer replicas on the overlay, and the
# controller publishing port 48515. HOME_DIR is a bind mount of MLSWARM_HOME (on a multi-node
# swarm, a shared file system mounted at the same path on every node). The tokens and the
# optional TLS pair are Docker secrets (swarm/secrets.sh); nothing secret is in an image,
# an environment variable or a log line.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$MLSWARM_HOME"
# The images run as uid 10001 (group 0): let it write the shared folder.
if [[ $(id -u) -eq 0 ]]; then chown 10001:0 "$MLSWARM_HOME"; chmod 0775 "$MLSWARM_HOME"; else chmod 0777 "$MLSWARM_HOME"; fi
mount="type=bind,source=$MLSWARM_HOME,target=/home"
source "$(dirname "$0")/secrets.sh"
docker service create --detach --quiet --no-resolve-image --name ml_train --network "$MLSWARM_NETWORK" \
  --replicas "$MLSWARM_TRAINERS" --mount "$mount" --stop-grace-period 60s \
  --update-order start-first --update-parallelism 1 "${TRAINER_SECRET_ARGS[@]}" "$TRAIN_IMAGE" >/dev/null
docker service create --detach --quiet --no-resolve-image --name ml_controller --network "$MLSWARM_NETWORK" \
  --publish "mode=$MLSWARM_PUBLISH_MODE,published=$MLSWARM_PORT,target=48515" --mount "$mount" \
  --env SUBNET_TRAIN="$MLSWARM_SUBNET" ${MLSWARM_TRAIN_DNS:+--env TRAIN_DNS="$MLSWARM_TRAIN_DNS"} \
  "${CONTROLLER_SECRET_ARGS[@]}" "$CONTROLLER_IMAGE" >/dev/null
echo "services ml_train ($MLSWARM_TRAINERS replicas) and ml_controller (port $MLSWARM_PORT) created"
scheme=$([[ -n $MLSWARM_TLS_CERT ]] && echo "https" || echo "http")
if [[ $MLSWARM_AUTH == on ]]; then
  echo "watch: curl -s${MLSWARM_TLS_CERT:+k} -H \"Authorization: Bearer \$(cat $MLSWARM_SECRETS_DIR/api_token)\" $scheme://localhost:$MLSWARM_PORT/status"
else
  echo "watch: curl -s${MLSWARM_TLS_CERT:+k} $scheme://localhost:$MLSWARM_PORT/status"
fi
