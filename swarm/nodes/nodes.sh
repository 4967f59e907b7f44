#!/usr/bin/env bash
# A Docker Swarm of several nodes on one machine: each node is a container running its own
# Docker engine (swarm/nodes/Dockerfile), all of them managers, on a bridge network of their
# own, with the same host folder at the same path (as an NFS mount looks to the containers).
# For trying multi-node behaviour (a node lost, a node cut off) without several machines; the
# e2e test tests/e2e/nodes_e2e.sh is built on it.
#   swarm/nodes/nodes.sh up [N]     N nodes (default 3): image built, engines started, the
#                                   ml_train and ml_controller images copied in, swarm formed
#   swarm/nodes/nodes.sh down       removes the nodes, their volumes, network and sockets
# Then talk to node I's engine with `DOCKER_HOST=unix://$MLSWARM_NODES_RUN/I/docker.sock docker ...`
# (the swarm/ scripts work unchanged that way). Sourced, it only defines the functions below.
# The node containers need what a Docker engine needs (all capabilities, no seccomp/AppArmor
# profile, the host's cgroups); privileged containers are not required.
: "${MLSWARM_NODES_PREFIX:=mlswarm-node}"       # container names: PREFIX-1 ... PREFIX-N
: "${MLSWARM_NODES_SUBNET:=10.43.90}"           # the nodes' /24 (node I is .(10+I))
: "${MLSWARM_NODES_RUN:=/run/mlswarm-nodes}"    # node I's engine socket: RUN/I/docker.sock
: "${MLSWARM_NODES_SHARED:=/srv/mlswarm-nodes}" # given to every node at the same path
: "${MLSWARM_NODES_IMAGES:=ml_train ml_controller}"

nodes_network() { echo "$MLSWARM_NODES_PREFIX-net"; }
node_name() { echo "$MLSWARM_NODES_PREFIX-$1"; }
node_ip() { echo "$MLSWARM_NODES_SUBNET.$((10 + $1))"; }
# node_docker I ARGS...: the docker CLI against node I's engine.
node_docker() {
  local i=$1
  shift
  DOCKER_HOST="unix://$MLSWARM_NODES_RUN/$i/docker.sock" docker "$@"
}
node_engine_up() { node_docker "$1" info >/dev/null 2>&1; }
# node_wait_engine I [SECONDS]: until node I's engine answers.
node_wait_engine() {
  local deadline=$((SECONDS + ${2:-60}))
  until node_engine_up "$1"; do
    ((SECONDS < deadline)) || { echo "node $1: its engine did not start" >&2; return 1; }
    sleep 0.5
  done
}

# node_run I: starts node I's container (fixed address, so that a restarted node keeps the
# address the swarm knows it by).
node_run() {
  local i=$1 name
  name=$(node_name "$i")
  mkdir -p "$MLSWARM_NODES_RUN/$i" "$MLSWARM_NODES_SHARED"
  docker run -d --name "$name" --hostname "node-$i" --network "$(nodes_network)" --ip "$(node_ip "$i")" \
    --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v "$name:/var/lib/docker" \
    -v "$MLSWARM_NODES_SHARED:$MLSWARM_NODES_SHARED" -v "$MLSWARM_NODES_RUN/$i:/run/host" \
    mlswarm-node --cgroup-parent="/$name" -H unix:///var/run/docker.sock -H unix:///run/host/docker.sock \
    >/dev/null
}

# node_kill I / node_start I: the node's container killed (its engine and every task on it
# vanish at once, no SIGTERM) or started again (the engine rejoins the swarm).
node_kill() { docker kill "$(node_name "$1")" >/dev/null; }
node_start() { docker start "$(node_name "$1")" >/dev/null && node_wait_engine "$1" 60; }
# node_cut I / node_reconnect I: node I loses the network the nodes share (its tasks keep
# running and the shared folder stays visible), or gets it back at the same address.
node_cut() { docker network disconnect "$(nodes_network)" "$(node_name "$1")"; }
node_reconnect() { docker network connect --ip "$(node_ip "$1")" "$(nodes_network)" "$(node_name "$1")"; }

nodes_up() {
  local n=${1:-3} i images_tar token
  local build_log
  build_log=$(docker build -q -t mlswarm-node "$(dirname "${BASH_SOURCE[0]}")" 2>&1) ||
    { tail -20 <<<"$build_log" >&2; return 1; }
  docker network create --subnet "$MLSWARM_NODES_SUBNET.0/24" "$(nodes_network)" >/dev/null || return 1
  for ((i = 1; i <= n; ++i)); do node_run "$i" || return 1; done
  for ((i = 1; i <= n; ++i)); do node_wait_engine "$i" 60 || return 1; done
  # No registry: the images travel as one `docker save`, loaded into every engine at once.
  images_tar=$(mktemp /tmp/mlswarm-nodes-images-XXXXXX.tar)
  # shellcheck disable=SC2086 # a list of image names
  docker save -o "$images_tar" $MLSWARM_NODES_IMAGES || { rm -f "$images_tar"; return 1; }
  local pids=()
  for ((i = 1; i <= n; ++i)); do
    node_docker "$i" load -q -i "$images_tar" >/dev/null &
    pids+=($!)
  done
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  rm -f "$images_tar"
  ((failed == 0)) || { echo "nodes: loading the images failed" >&2; return 1; }
  node_docker 1 swarm init --advertise-addr "$(node_ip 1)" >/dev/null || return 1
  token=$(node_docker 1 swarm join-token -q manager) || return 1
  for ((i = 2; i <= n; ++i)); do
    node_docker "$i" swarm join --token "$token" --advertise-addr "$(node_ip "$i")" "$(node_ip 1):2377" >/dev/null ||
      return 1
  done
  echo "nodes: $n managers up ($(node_ip 1) ... $(node_ip "$n")); node I's engine: DOCKER_HOST=unix://$MLSWARM_NODES_RUN/I/docker.sock"
}

nodes_down() {
  local name
  for name in $(docker ps -aq -f "name=^$MLSWARM_NODES_PREFIX-[0-9]+$"); do docker rm -f -v "$name" >/dev/null 2>&1; done
  for name in $(docker volume ls -q -f "name=^$MLSWARM_NODES_PREFIX-[0-9]+$"); do docker volume rm "$name" >/dev/null 2>&1; done
  docker network rm "$(nodes_network)" >/dev/null 2>&1
  rm -rf "$MLSWARM_NODES_RUN"
  # The nodes' engines made cgroups under /PREFIX-I on the host (--cgroup-parent).
  local dir
  for dir in /sys/fs/cgroup/*/"$MLSWARM_NODES_PREFIX"-* /sys/fs/cgroup/"$MLSWARM_NODES_PREFIX"-*; do
    [[ -d $dir ]] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  case ${1:-} in
    up) nodes_up "${2:-3}" ;;
    down) nodes_down ;;
    *) echo "usage: $0 up [N] | down" >&2; exit 2 ;;
  esac
fi
