#!/usr/bin/env bash
# End to end on a real Docker engine: build both images, run a single-node swarm with
# `docker service create --replicas 4 ml_train` and the controller, then check what users do
# (discovery, train, predict, a trainer's /status from inside the overlay, scale down, DNS
# discovery alone, the stack file). The tokens are Docker secrets, as swarm/03_deploy.sh makes
# them. Every wait has a deadline.
# It runs only where no swarm is active, or where the active one was made by this test (a
# node label says so); it never touches a swarm it did not make, and it removes what it made
# (services, stack, secrets, network, the swarm itself). On a host in someone else's swarm it
# skips (exit 77). Prints "N passed, M failed" last; exits non-zero on any failure.
# `swarm_e2e.sh images` only builds the two images (ctest's e2e_images, which runs beside the
# other tests while Docker downloads and compiles; e2e_swarm then finds both in Docker's cache).
set -uo pipefail
mode=${1:-all}
[[ $mode == all || $mode == images ]] || { echo "usage: $0 [images]" >&2; exit 2; }
cd "$(dirname "$0")/../.." || exit 1
export MLSWARM_NETWORK=mlswarm_e2e MLSWARM_SUBNET=10.42.77.0/24 MLSWARM_PORT=${E2E_PORT:-48575}
MLSWARM_HOME=$(mktemp -d /tmp/mlswarm-e2e-XXXXXX)
MLSWARM_SECRETS_DIR=$(mktemp -d /tmp/mlswarm-e2e-secrets-XXXXXX)
export MLSWARM_HOME MLSWARM_SECRETS_DIR MLSWARM_TRAINERS=4 MLSWARM_AUTH=on MLSWARM_PREDICT_THREADS=1  # every replica shares this one node
# The routing mesh (ingress) does not reach the host's loopback in this sandbox; host mode
# publishes the same port on the node itself.
export MLSWARM_PUBLISH_MODE=${E2E_PUBLISH_MODE:-host}
# Host mode has one controller per node (the port); the zero-downtime step below runs two
# replicas on the overlay only.
export MLSWARM_CONTROLLERS=1
source swarm/env.sh
controller="http://127.0.0.1:$MLSWARM_PORT"
passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null; }
# poll SECONDS COMMAND...: runs COMMAND until it succeeds or the deadline passes.
poll() { local deadline=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS < deadline)) || return 1; sleep 1; done; }
# poll_progress SECONDS ID: until job ID succeeded, failing only when its progress (attempt,
# epoch, step) has not moved for SECONDS: a deadline on a stall, not on the machine's speed.
poll_progress() {
  local stall=$1 id=$2 last="" now deadline=$((SECONDS + $1))
  while true; do
    now=$(api "$controller/jobs/$id" | json 'd["state"], d["attempts"], d["epoch"], d["step"]') || now=""
    [[ $now == succeeded* ]] && return 0
    [[ $now == failed* || $now == cancelled* ]] && return 1
    if [[ $now != "$last" ]]; then last=$now deadline=$((SECONDS + stall)); fi
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}
api_token=""
# curl with the API token, as clients of a secured controller call it.
api() { curl -sf -H "Authorization: Bearer $api_token" "$@"; }
trainer_count() { api "$controller/status" | json 'len(d["trainers"])'; }
has_trainers() { [[ $(trainer_count) == "$1" ]]; }

made_swarm=0
cleanup() {
  if ((made_swarm)); then  # everything in it is this test's
    docker stack rm e2e >/dev/null 2>&1
    docker service rm ml_controller ml_train >/dev/null 2>&1
    for _ in $(seq 1 30); do
      docker secret rm mlswarm_api_token mlswarm_cluster_token >/dev/null 2>&1
      [[ -z $(docker secret ls -q -f name=mlswarm_ 2>/dev/null) ]] && break
      sleep 1
    done
    for _ in $(seq 1 30); do docker network rm "$MLSWARM_NETWORK" >/dev/null 2>&1 && break; sleep 1; done
    docker swarm leave --force >/dev/null 2>&1
  fi
  rm -rf "$MLSWARM_HOME" "$MLSWARM_SECRETS_DIR"
}
trap cleanup EXIT

docker/ensure_engine.sh || { echo "0 passed, 1 failed"; exit 1; }
# Building images touches no swarm: the images mode builds them wherever the engine runs.
swarm_state=$(docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null)
if [[ $mode == all && $swarm_state != inactive ]]; then
  owner=$(docker node inspect self -f '{{index .Spec.Labels "mlswarm.e2e"}}' 2>/dev/null)
  if [[ $owner != made-by-e2e ]]; then
    echo "SKIP: this Docker engine is in a swarm ($swarm_state) that the test did not make; the e2e never"
    echo "touches one. Run it on a host outside any swarm (CI does)."
    echo "0 passed, 0 failed"
    exit 77
  fi
  made_swarm=1  # left by an earlier run of this test that was killed: clear it first
  cleanup
  made_swarm=0
fi

# Docker keeps every build's stages as untagged images (about 6 GB per change of the sources):
# this build's stages get tags, and the images the previous run left are removed after it, so
# that repeated runs do not fill the disk; layers both share (apt's packages) stay as the cache.
stage_tags=(mlswarm-e2e-stage:build mlswarm-e2e-stage:assemble-train mlswarm-e2e-stage:assemble-controller)
images_before=$(docker image inspect -f '{{.Id}}' ml_train ml_controller "${stage_tags[@]}" 2>/dev/null)
build_args=(--build-arg MLSWARM_GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || true)")
# MLSWARM_PREBUILT_DIR (ctest sets it to its build folder): the images take the binaries under
# test instead of compiling them again (docker/prebuilt/README), where this host is Debian 12 as
# the images are; elsewhere, and when it is not set, the images compile from the sources.
prebuilt=(trainer/ml_trainer controller/ml_controller cli/mlswarm) how="compiled in its build stage"
if [[ -n ${MLSWARM_PREBUILT_DIR:-} ]] && grep -qx 'VERSION_CODENAME=bookworm' /etc/os-release &&
   (cd "$MLSWARM_PREBUILT_DIR" && cp "${prebuilt[@]}" "$OLDPWD/docker/prebuilt/"); then
  build_args+=(--build-arg PREBUILT=1) how="from the build under test ($MLSWARM_PREBUILT_DIR)"
fi
unstage() { rm -f docker/prebuilt/ml_trainer docker/prebuilt/ml_controller docker/prebuilt/mlswarm; }
for kind in train controller; do
  start=$SECONDS
  if docker build -q -f "Dockerfile_$kind" "${build_args[@]}" -t "ml_$kind" . >/tmp/mlswarm-e2e-build-$kind.log 2>&1; then
    pass "image ml_$kind built in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "ml_$kind" | awk '{printf "%.0f MB", $1/1e6}'), binaries $how"
  else
    unstage
    tail -30 /tmp/mlswarm-e2e-build-$kind.log
    fail "image ml_$kind does not build"; echo "$passed passed, $failed failed"; exit 1
  fi
done
docker image ls --format 'image {{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^image ml_'
# From the cache, in seconds.
docker build -q -f Dockerfile_train "${build_args[@]}" --target build -t "${stage_tags[0]}" . >/dev/null 2>&1
docker build -q -f Dockerfile_train "${build_args[@]}" --target assemble -t "${stage_tags[1]}" . >/dev/null 2>&1
docker build -q -f Dockerfile_controller "${build_args[@]}" --target assemble -t "${stage_tags[2]}" . >/dev/null 2>&1
unstage
images_now=$(docker image inspect -f '{{.Id}}' ml_train ml_controller "${stage_tags[@]}" 2>/dev/null)
for id in $images_before; do
  grep -qxF "$id" <<<"$images_now" || docker rmi "$id" >/dev/null 2>&1 || true
done
if [[ $mode == images ]]; then
  echo "$passed passed, $failed failed"
  exit 0
fi

advertise=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
export MLSWARM_ADVERTISE_ADDR=${advertise:-127.0.0.1}
swarm/01_init.sh || { fail "swarm init"; echo "$passed passed, $failed failed"; exit 1; }
made_swarm=1
docker node update --label-add mlswarm.e2e=made-by-e2e self >/dev/null
start=$SECONDS
swarm/03_deploy.sh
api_token=$(cat "$MLSWARM_SECRETS_DIR/api_token")
source swarm/secrets.sh  # the same --secret arguments, for the services made by hand below
if poll 180 has_trainers 4; then
  pass "controller lists 4 trainers, $((SECONDS - start)) s after docker service create"
else
  fail "controller lists $(trainer_count) trainers, not 4"; docker service ps ml_train ml_controller --no-trunc | head -20
  docker service logs ml_controller 2>&1 | tail -20
fi

spec='{"model_id": "e2e", "example_idxs": [0, 3000], "test_idxs": [0, 2000], "train_opts": {"epochs": 1, "batch_size": 64}}'
no_token=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$controller/train" -H 'Content-Type: application/json' -d "$spec")
wrong_token=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' "$controller/status")
jobs_after=$(api "$controller/jobs" | json 'len(d["jobs"])')
if [[ $no_token == 401 && $wrong_token == 403 && $jobs_after == 0 ]]; then
  pass "without the API token /train is refused (401), with a wrong one /status too (403); no job was made"
else
  fail "no token -> $no_token, wrong token -> $wrong_token, jobs afterwards: $jobs_after"
fi
env_listing=$(docker service inspect ml_controller ml_train --format '{{json .Spec.TaskTemplate.ContainerSpec}}')
secret_leaks=$( (echo "$env_listing"; docker service logs ml_controller 2>&1; docker service logs ml_train 2>&1;
  docker image history --no-trunc ml_controller; docker image history --no-trunc ml_train) | grep -cF -e "$api_token")
if [[ $secret_leaks == 0 ]] && grep -q 'API_TOKEN_FILE=/run/secrets/mlswarm_api_token' <<<"$env_listing" &&
   [[ $(docker secret ls -q -f name=mlswarm_ | wc -l) == 2 ]]; then
  pass "the tokens are Docker secrets under /run/secrets, in no environment, image or log"
else
  fail "token handling: $secret_leaks leaks; $(docker secret ls --format '{{.Name}}' | tr '\n' ' ')"
fi

job=$(api -X POST "$controller/train" -H 'Content-Type: application/json' -d "$spec" | json 'd["job_id"]')
job_done() { [[ $(api "$controller/jobs/$job" | json 'd["state"]') == succeeded ]]; }
if [[ -n $job ]] && poll 300 job_done; then
  pass "job $job succeeded on $(api "$controller/jobs/$job" | json 'd["trainer"]') (every call to it signed with the cluster key)"
else
  fail "job ${job:-<none>} did not succeed: $(api "$controller/jobs/$job")"
fi

accuracy=$(api "$controller/datasets/fashion-mnist/examples?split=test&start=0&count=200" | python3 -c '
import json, sys, urllib.request
page = json.load(sys.stdin)
body = json.dumps({"model_id": "e2e", "examples": page["examples"]}).encode()
req = urllib.request.Request(sys.argv[1] + "/predict", body,
                             {"Content-Type": "application/json", "Authorization": "Bearer " + sys.argv[2]})
out = json.load(urllib.request.urlopen(req))
print(sum(a == b for a, b in zip(out["class_idxs"], page["labels"])) / len(page["labels"]))' "$controller" "$api_token")
if python3 -c "import sys; sys.exit(0 if float('${accuracy:-0}') > 0.3 else 1)"; then
  pass "/predict on 200 test images: accuracy $accuracy (chance 0.1)"
else
  fail "/predict accuracy ${accuracy:-<none>}"
  api "$controller/datasets/fashion-mnist/examples?count=1" | head -c 300
fi

# The image serves the dashboard and the Open Inference Protocol, with the same token rules.
page=$(curl -sf "$controller/" | grep -c '<title>mlswarm</title>')
live=$(curl -s -o /dev/null -w '%{http_code}' "$controller/v2/health/live")
versions=$(api "$controller/v2/models/e2e" | json '",".join(d["versions"])')
v2_no_token=$(curl -s -o /dev/null -w '%{http_code}' "$controller/v2/models/e2e")
if [[ $page == 1 && $live == 200 && -n $versions && $v2_no_token == 401 ]]; then
  pass "the dashboard (GET /) and /v2 are served: model e2e versions $versions, /v2 without the token 401"
else
  fail "dashboard/v2: page $page, live $live, versions '${versions}', without the token $v2_no_token"
fi

trainer=$(api "$controller/jobs/$job" | json 'd["trainer"]')
cid=$(docker ps -q -f name=ml_controller | head -n1)
if docker exec "$cid" ml_controller --fetch "http://$trainer/status" | grep -q "\"$job\""; then
  pass "trainer $trainer's /status, fetched inside the overlay, shows the job"
else
  fail "trainer $trainer's /status does not show job $job"
fi
# One model across two replicas: the ranks meet over the overlay (Gloo binds to the overlay
# address the controller reached each trainer at).
shared=$(api -X POST "$controller/train" -H 'Content-Type: application/json' -d '{"model_id": "e2e-shared",
  "trainers": 2, "example_idxs": [0, 3000], "test_idxs": [0, 2000], "train_opts": {"epochs": 1, "batch_size": 64}}' | json 'd["job_id"]')
shared_ranks=""
shared_done() {
  local state ranks
  state=$(api "$controller/jobs/$shared" | json 'd["state"]')
  ranks=$(api "$controller/status" | json "' '.join(t for j in d['jobs'] if j['job_id'] == '$shared' for t in j['trainers'])")
  [[ -n $ranks ]] && shared_ranks=$ranks
  [[ $state == succeeded ]]
}
if [[ -n $shared ]] && poll 300 shared_done && [[ $(wc -w <<<"$shared_ranks") == 2 ]]; then
  pass "job $shared trained on 2 replicas at once ($shared_ranks) and succeeded"
else
  fail "the 2-trainer job ${shared:-<none>} did not succeed on 2 replicas: $(api "$controller/jobs/$shared") ranks: $shared_ranks"
  docker service logs ml_train 2>&1 | grep -E "job $shared" | tail -5
fi
uids=$(for c in $(docker ps -q -f name=ml_); do docker exec "$c" id -u; done | sort -u | tr '\n' ' ')
if [[ -n $uids && ! " $uids" =~ " 0 " ]]; then pass "containers run as uid $uids(not root)"; else fail "a container runs as root ($uids)"; fi

docker service scale --detach ml_train=2 >/dev/null
if poll 90 has_trainers 2; then pass "after scale ml_train=2 the controller lists 2 trainers"; else fail "after scale: $(trainer_count) trainers"; fi

# A rolling restart of every trainer replica while a job runs: each old replica gets SIGTERM,
# checkpoints at its next batch and exits; the job resumes from the checkpoint elsewhere.
# The job must outlast the update's way to its replica (about 20 s measured): 300,000 images,
# about 45 s at the trainer's 7,000 images/s on 2 cores (60,000 finished before the update came;
# 180,000 were 77% done when it did). Its end is awaited for as long as it makes progress (on a
# busy machine it trains far slower), not for a fixed time.
roll=$(api -X POST "$controller/train" -H 'Content-Type: application/json' -d '{"model_id": "e2e-roll",
  "example_idxs": [0, 60000], "test_idxs": [0, 2000], "train_opts": {"epochs": 5, "batch_size": 64, "checkpoint_every_steps": 40}}' | json 'd["job_id"]')
roll_running() { [[ $(api "$controller/jobs/$roll" | json 'd["step"] > 0') == True ]]; }
roll_state() { api "$controller/jobs/$roll" | json 'd["state"], d["attempts"]'; }
if [[ -n $roll ]] && poll 120 roll_running; then
  docker service update --detach --force ml_train >/dev/null
  if poll_progress 180 "$roll"; then
    attempts=$(api "$controller/jobs/$roll" | json 'd["attempts"]')
    # Captured first: `grep -q` closing the pipe early would fail the pipeline under pipefail.
    roll_log=$(docker service logs ml_train 2>&1 | grep -E "job $roll .*(stopped|resuming)")
    sed 's/^/  /' <<<"$roll_log" | head -6
    # Interrupted mid-training means a resume inside epochs 1 to 5, not after the end: from a
    # step of an epoch, or from an epoch's evaluation when the SIGTERM came during it.
    if ((attempts >= 2)) && grep -qE "resuming from checkpoint at (the evaluation of )?epoch [1-5]( |$)" <<<"$roll_log"; then
      pass "job $roll succeeded through docker service update --force ml_train, resumed mid-training (attempts $attempts)"
    else
      fail "job $roll was not interrupted and resumed mid-training by the rolling update (attempts $attempts)"
    fi
  else
    fail "job $roll did not survive the rolling update: $(roll_state)"
  fi
else
  fail "job ${roll:-<none>} never started"
fi
has_trainers_settled() { has_trainers 2; }
poll 120 has_trainers_settled || true

# Zero downtime: two controller replicas behind the service name, a load generator on the
# overlay sending single-image /predicts with 8 clients, and a rolling update of both replicas.
# dnsrr: this kernel has no IPVS, so the service's virtual IP does not answer here.
docker service rm ml_controller >/dev/null
controllers_gone() { [[ -z $(docker ps -aq -f name=ml_controller) ]]; }
poll 60 controllers_gone || true
MLSWARM_CONTROLLERS=2 MLSWARM_ENDPOINT_MODE=dnsrr MLSWARM_PUBLISH_MODE=none swarm/03_deploy.sh controller
healthy_controllers() { [[ $(docker ps -q -f name=ml_controller -f health=healthy | wc -l) == 2 ]]; }
# The load generator: the mlswarm CLI from the controller's image, on the test's overlay.
overlay_client() {
  docker run --rm --network "$MLSWARM_NETWORK" --user 0 -v "$MLSWARM_SECRETS_DIR:/secrets:ro" \
    --entrypoint /usr/local/bin/mlswarm ml_controller --url http://ml_controller:48515 --token-file /secrets/api_token "$@"
}
overlay_ready() { overlay_client load --model e2e --clients 1 --seconds 0.2 --warmup 0 >/dev/null 2>&1; }
journal="$MLSWARM_HOME/controller/jobs.jsonl"
if poll 120 healthy_controllers && poll 60 overlay_ready; then
  overlay_client load --model e2e --clients 8 --seconds 60 --warmup 0 --label rolling-update \
    >/tmp/mlswarm-e2e-load.json 2>/tmp/mlswarm-e2e-load.err &
  load_pid=$!
  start=$SECONDS
  docker service update --quiet --force ml_controller >/tmp/mlswarm-e2e-update.log 2>&1
  update_done() { [[ $(docker service inspect ml_controller -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}') == completed ]]; }
  poll 60 update_done  # the command returns when the tasks converged, the state after --update-monitor
  update_s=$((SECONDS - start))
  wait "$load_pid"
  load=$(cat /tmp/mlswarm-e2e-load.json)
  sent=$(json 'd["sent"]' <<<"$load") load_failed=$(json 'd["failed"]' <<<"$load")
  replicas_seen=$(json 'len(d["answered_by"])' <<<"$load")
  update_state=$(docker service inspect ml_controller -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}')
  journal_ok=$(python3 -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
print(all(json.loads(l) is not None for l in lines) and len(lines) > 0)' "$journal" 2>/dev/null)
  echo "  $load"
  if [[ -n $sent && $load_failed == 0 && $update_state == completed && $journal_ok == True ]] && ((replicas_seen >= 3)); then
    pass "docker service update --force ml_controller (2 replicas, dnsrr) under 8 clients' /predicts: $sent sent, 0 failed, $replicas_seen replicas answered, update took $update_s s, journal intact"
  else
    fail "rolling controller update: sent ${sent:-?}, failed ${load_failed:-?}, replicas ${replicas_seen:-?}, update '$update_state', journal ${journal_ok:-unreadable}"
    head -5 /tmp/mlswarm-e2e-load.err; tail -3 /tmp/mlswarm-e2e-update.log
    docker service ps ml_controller --no-trunc 2>&1 | head -8
  fi
else
  fail "2 controller replicas on the overlay never became healthy and reachable by name"
  docker service ps ml_controller --no-trunc 2>&1 | head -8; docker service logs ml_controller 2>&1 | tail -10
fi

# DNS discovery alone: a controller without SUBNET_TRAIN that resolves tasks.ml_train.
docker service rm ml_controller >/dev/null
docker service create --detach --quiet --no-resolve-image --name ml_controller --network "$MLSWARM_NETWORK" \
  --publish "mode=$MLSWARM_PUBLISH_MODE,published=$MLSWARM_PORT,target=48515" \
  --mount "type=bind,source=$MLSWARM_HOME,target=/home" \
  --env TRAIN_DNS=tasks.ml_train "${CONTROLLER_SECRET_ARGS[@]}" ml_controller >/dev/null
if poll 120 has_trainers 2; then pass "TRAIN_DNS=tasks.ml_train alone finds the 2 trainers"; else fail "DNS discovery: $(trainer_count) trainers"; fi
if [[ $(api "$controller/jobs" | json 'len(d["jobs"])') == 3 ]]; then
  pass "the new controller lists the 3 earlier jobs from the journal on HOME_DIR"
else
  fail "the new controller does not list the earlier job"
fi

# The stack file: the same cluster from `docker stack deploy`, secrets and all.
docker service rm ml_controller ml_train >/dev/null
for _ in $(seq 1 30); do docker network rm "$MLSWARM_NETWORK" >/dev/null 2>&1 && break; sleep 1; done
start=$SECONDS
if docker stack deploy -c swarm/stack.yml e2e >/tmp/mlswarm-e2e-stack.log 2>&1 && poll 180 has_trainers 4 &&
   [[ $(api "$controller/jobs" | json 'len(d["jobs"])') == 3 ]]; then
  pass "docker stack deploy -c swarm/stack.yml: 4 trainers after $((SECONDS - start)) s, the journal's 3 jobs listed"
else
  fail "stack deploy: $(cat /tmp/mlswarm-e2e-stack.log) $(trainer_count) trainers"
  docker stack ps e2e --no-trunc 2>&1 | head -10
fi

echo "$passed passed, $failed failed"
((failed == 0))
