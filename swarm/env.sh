# shellcheck shell=bash
# Settings shared by the swarm/ scripts; override any of them in the environment.
# A private /24 for the overlay (never the seed's 30.0.0.0/24, which someone else owns).
: "${MLSWARM_NETWORK:=mlswarm_net}"
: "${MLSWARM_SUBNET:=10.42.0.0/24}"
: "${MLSWARM_HOME:=/srv/mlswarm}"          # the shared HOME_DIR on every node (bind mount)
: "${MLSWARM_TRAINERS:=4}"
: "${MLSWARM_TRAIN_WORKERS:=1}"            # jobs each trainer replica trains at once (TRAIN_WORKERS)
# Swarm placement constraints (docker service create --constraint), empty for none: which nodes
# run trainers (e.g. node.labels.mlswarm.trainer==yes) and which run controller replicas.
: "${MLSWARM_TRAINER_CONSTRAINT:=}"
: "${MLSWARM_CONTROLLER_CONSTRAINT:=}"
: "${MLSWARM_PORT:=48515}"
# GPUs each trainer task reserves (Swarm generic resources, kind MLSWARM_GPU_KIND): 0 places
# trainers anywhere; 1 or more places them only on nodes that advertise that many unreserved
# (docs/operations.md, "GPU nodes"). The image must then hold a CUDA LibTorch (Dockerfile_train).
: "${MLSWARM_TRAINER_GPUS:=0}"
: "${MLSWARM_GPU_KIND:=NVIDIA-GPU}"
# Controller replicas: one leads (scans, dispatches, writes the journal), the others serve reads
# and predictions and forward writes to it; a second replica makes failover and rolling updates
# invisible to clients.
: "${MLSWARM_CONTROLLERS:=2}"
# ingress (Swarm's routing mesh, the default), host (the port opens on each node running a
# controller replica: at most one replica per node; for engines where the mesh is unavailable,
# as in the e2e test's sandbox) or none (reachable only on the overlay, by service name).
: "${MLSWARM_PUBLISH_MODE:=ingress}"
# vip (the service name is one virtual IP that balances connections, the default) or dnsrr
# (the name resolves to every replica; for engines without IPVS, where the VIP does not
# answer; cannot be combined with ingress publishing).
: "${MLSWARM_ENDPOINT_MODE:=vip}"
# LibTorch threads of one controller's forward pass (PREDICT_THREADS): 0 = the cores divided among
# its forward workers (PREDICT_WORKERS, one per core by default), so 1. Set 1
# when several controller replicas share a node: with one thread per core each, they spin against
# each other (bench/serve_scale.sh: two replicas on two cores 383 requests/s at 0, 1,346 at 1).
: "${MLSWARM_PREDICT_THREADS:=0}"
# Tokens (Docker secrets, mounted under /run/secrets/): on by default. The API token that
# clients send is kept in MLSWARM_SECRETS_DIR/api_token (made once, mode 0600); the cluster
# token the controller sends to trainers is random and lives only in the secret.
: "${MLSWARM_AUTH:=on}"
: "${MLSWARM_SECRETS_DIR:=$HOME/.mlswarm}"
: "${MLSWARM_PUBLIC_READS:=0}"              # 1: GET /status, /jobs, ... without the token
# Optional TLS on the controller's port: PEM files, made into secrets at deploy time.
: "${MLSWARM_TLS_CERT:=}"
: "${MLSWARM_TLS_KEY:=}"
: "${MLSWARM_REGISTRY:=}"                  # e.g. registry.example:5000/ to push multi-node images
: "${MLSWARM_TAG:=latest}"
export TRAIN_IMAGE="${MLSWARM_REGISTRY}ml_train:${MLSWARM_TAG}"
export CONTROLLER_IMAGE="${MLSWARM_REGISTRY}ml_controller:${MLSWARM_TAG}"
