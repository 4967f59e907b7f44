#!/usr/bin/env bash
# Sourced by 03_deploy.sh (and the e2e test), or run alone before `docker stack deploy`: creates the Docker secrets the services use and
# sets TRAINER_SECRET_ARGS and CONTROLLER_SECRET_ARGS for `docker service create`.
#   mlswarm_api_token      from MLSWARM_SECRETS_DIR/api_token, made once from /dev/urandom
#   mlswarm_cluster_token  random, straight from /dev/urandom into the secret (no file)
#   mlswarm_tls_cert/_key  from MLSWARM_TLS_CERT / MLSWARM_TLS_KEY when both are set
# Existing secrets are kept (a secret cannot change while a service uses it; rotate with
# `docker service update --secret-rm ... --secret-add ...`). Tokens are piped, never passed
# as arguments, so they appear in no process list, environment or log.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  source "$(dirname "$0")/env.sh"
fi
TRAINER_SECRET_ARGS=()
CONTROLLER_SECRET_ARGS=()
mlswarm_secret() {  # name, then the secret on stdin
  if docker secret inspect "$1" >/dev/null 2>&1; then cat >/dev/null; else docker secret create "$1" - >/dev/null; fi
}
mlswarm_mount() {  # name: mounted read-only for the images' user (uid 10001)
  echo "source=$1,target=$1,uid=10001,gid=0,mode=0400"
}
if [[ $MLSWARM_AUTH == on ]]; then
  if [[ ! -s $MLSWARM_SECRETS_DIR/api_token ]]; then
    # Hex: a token users paste into commands never starts with '-' (base64url did, 1 time in 64).
    (umask 077 && mkdir -p "$MLSWARM_SECRETS_DIR" &&
      head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$MLSWARM_SECRETS_DIR/api_token")
    echo "made an API token: $MLSWARM_SECRETS_DIR/api_token (clients send it as 'Authorization: Bearer ...')"
  fi
  mlswarm_secret mlswarm_api_token <"$MLSWARM_SECRETS_DIR/api_token"
  head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' | mlswarm_secret mlswarm_cluster_token
  TRAINER_SECRET_ARGS+=(--secret "$(mlswarm_mount mlswarm_cluster_token)"
    --env CLUSTER_TOKEN_FILE=/run/secrets/mlswarm_cluster_token)
  CONTROLLER_SECRET_ARGS+=(--secret "$(mlswarm_mount mlswarm_api_token)"
    --secret "$(mlswarm_mount mlswarm_cluster_token)"
    --env API_TOKEN_FILE=/run/secrets/mlswarm_api_token
    --env CLUSTER_TOKEN_FILE=/run/secrets/mlswarm_cluster_token
    --env PUBLIC_READS="$MLSWARM_PUBLIC_READS")
fi
if [[ -n $MLSWARM_TLS_CERT && -n $MLSWARM_TLS_KEY ]]; then
  mlswarm_secret mlswarm_tls_cert <"$MLSWARM_TLS_CERT"
  mlswarm_secret mlswarm_tls_key <"$MLSWARM_TLS_KEY"
  CONTROLLER_SECRET_ARGS+=(--secret "$(mlswarm_mount mlswarm_tls_cert)" --secret "$(mlswarm_mount mlswarm_tls_key)"
    --env TLS_CERT_FILE=/run/secrets/mlswarm_tls_cert --env TLS_KEY_FILE=/run/secrets/mlswarm_tls_key)
fi
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  docker secret ls --format '{{.Name}}' | grep '^mlswarm_' | sed 's/^/secret /'
fi
