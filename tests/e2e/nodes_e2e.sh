#!/usr/bin/env bash
# Several nodes for real, on one machine: three Swarm managers, each a container with its own
# Docker engine (swarm/nodes/nodes.sh), one host folder shared by all at the same path (as an NFS
# mount looks to them), the stack deployed across them with swarm/03_deploy.sh. Then:
#  1. a job training on node B (2) and a data-parallel job with ranks on B and C (3); node B's
#     container is killed (its engine and every task on it vanish, no SIGTERM) once both have a
#     checkpoint: both train again on the other nodes from their checkpoints, with their attempt
#     raised; the data-parallel one succeeds once, the other (50 epochs, so that no machine is fast
#     enough for it to end before the kill) is cancelled once it trained again;
#  2. node B comes back (docker start), `docker service scale` puts a trainer on it again, and a
#     job with a rank on every trainer runs there;
#  3. the controller leader's node is killed under `mlswarm load` (run on node B through both
#     replicas, each request resent once to the other replica when unanswered): the other
#     replica leads, no /predict fails;
#  4. a node running a job is cut off from the nodes' network (not killed): the job runs again
#     elsewhere with its attempt raised while the cut-off trainer still runs the old attempt
#     against the shared folder; the fence keeps that attempt's writes out (its log, read
#     afterwards, says so), and once the node is back, no copy of the old attempt runs and the
#     model is the new attempt's.
# No check depends on the machine's speed: kills wait for checkpoints, not for a moment in a
# job's life, and what a cut-off trainer did is read from its log, not caught in passing.
# It prints the measured seconds. It makes its own nodes, network and folders and removes them
# (leaving nothing behind), and never touches the host engine's own swarm. Exit 77: no Docker
# engine can run nested engines here. Prints "N passed, M failed" last.
#   tests/e2e/nodes_e2e.sh          (root; ml_train and ml_controller images built, or it builds them)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
export MLSWARM_NODES_PREFIX=mlswarm-e2e-node MLSWARM_NODES_SUBNET=10.43.91 MLSWARM_NODES_RUN=/run/mlswarm-e2e-nodes
MLSWARM_NODES_SHARED=$(mktemp -d /tmp/mlswarm-nodes-XXXXXX)
export MLSWARM_NODES_SHARED
source swarm/nodes/nodes.sh
export MLSWARM_HOME=$MLSWARM_NODES_SHARED/home MLSWARM_SECRETS_DIR=$MLSWARM_NODES_SHARED/secrets
export MLSWARM_NETWORK=mlswarm_nodes MLSWARM_SUBNET=10.42.79.0/24 MLSWARM_AUTH=on
# Host publishing (one controller per node, on the node's address) and dnsrr (no IPVS here).
export MLSWARM_PUBLISH_MODE=host MLSWARM_ENDPOINT_MODE=dnsrr MLSWARM_CONTROLLERS=2 MLSWARM_PREDICT_THREADS=1
# Where things run is set by node labels, so the test knows which node holds what.
export MLSWARM_TRAINER_CONSTRAINT='node.labels.mlswarm.trainer==yes'
export MLSWARM_CONTROLLER_CONSTRAINT='node.labels.mlswarm.controller==yes'
export MLSWARM_TRAINERS=1 MLSWARM_TRAIN_WORKERS=2
passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; ((failed == 0)); exit; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null; }
# poll SECONDS COMMAND...: runs COMMAND until it succeeds or the deadline passes.
poll() { local deadline=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.5; done; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

cleanup() {
  nodes_down
  rm -rf "$MLSWARM_NODES_SHARED"
}
trap cleanup EXIT

docker/ensure_engine.sh >/dev/null || { fail "no Docker engine"; finish; }
nodes_down  # what an earlier run of this test left when it was killed
if ! docker image inspect ml_train ml_controller >/dev/null 2>&1; then swarm/02_build.sh || { fail "images"; finish; }; fi
start=$SECONDS
if ! nodes_up 3; then
  docker logs "$(node_name 1)" 2>&1 | tail -5
  echo "SKIP: nested Docker engines do not run here"
  exit 77
fi
pass "3 manager nodes up, images loaded, swarm formed in $((SECONDS - start)) s"

# The swarm's own commands go to a node that is up and connected.
unavailable=" "
manager() { local i; for i in 1 2 3; do [[ $unavailable == *" $i "* ]] || { echo "$i"; return; }; done; }
swarm_docker() { node_docker "$(manager)" "$@"; }
deploy() { DOCKER_HOST="unix://$MLSWARM_NODES_RUN/$(manager)/docker.sock" "$@"; }
label() { swarm_docker node update --label-add "mlswarm.$2=yes" "node-$1" >/dev/null; }

api_token=""
controller_nodes="1 3"
# api PATH [CURL ARGS]: the leading replica (which holds the live trainer table and job
# progress), or any replica that answers when none leads (followers serve reads from the
# journal and forward writes to the leader).
api() {
  local path=$1 i order=""
  shift
  for i in $controller_nodes; do
    [[ $unavailable == *" $i "* ]] && continue
    if [[ $(role_of "$i") == leader ]]; then order="$i $order"; else order="$order $i"; fi
  done
  for i in $order; do
    curl -sf -m 10 -H "Authorization: Bearer $api_token" "http://$(node_ip "$i"):48515$path" "$@" && return 0
  done
  return 1
}
role_of() {
  curl -sf -m 2 -H "Authorization: Bearer $api_token" "http://$(node_ip "$1"):48515/status" |
    json 'd["controller"]["role"]'
}
submit() { api /train -X POST -H 'Content-Type: application/json' -d "$1" | json 'd["job_id"]'; }
job() { api "/jobs/$1" | json "$2"; }
trainer_count() { api /status | json 'len(d["trainers"])'; }
has_trainers() { [[ $(trainer_count) == "$1" ]]; }
# node_of ADDRESS: the node (1-3) of the task with that overlay address (trainer or controller).
node_of() {
  local ip=${1%:*} task
  for task in $(swarm_docker service ps -q -f desired-state=running ml_train ml_controller 2>/dev/null); do
    swarm_docker inspect -f '{{.NodeID}} {{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}' \
      "$task" 2>/dev/null
  done | awk -v ip="$ip/" 'index($0, " " ip) { print $1; exit }' |
    xargs -r -I{} docker --host "unix://$MLSWARM_NODES_RUN/$(manager)/docker.sock" node inspect -f '{{.Description.Hostname}}' {} |
    sed 's/^node-//'
}
# nodes_of_job ID: the nodes of the job's ranks, sorted, one line.
nodes_of_job() {
  local t
  for t in $(job "$1" '" ".join(d["trainers"] or [d["trainer"]])'); do node_of "$t"; done | sort | tr '\n' ' '
}
# trainer_logs [NODE]: the logs of every trainer container (running or ended) on the node, or on
# every node that is up.
trainer_logs() {
  local i c
  for i in ${1:-1 2 3}; do
    [[ -z ${1:-} && $unavailable == *" $i "* ]] && continue
    for c in $(node_docker "$i" ps -aq -f name=ml_train 2>/dev/null); do node_docker "$i" logs "$c" 2>&1; done
  done
}
# The journal's succeeded records of a job (exactly one is the promise).
succeeded_records() {
  python3 -c '
import json, sys
n = 0
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("job_id") == sys.argv[2] and r.get("state") == "succeeded":
        n += 1
print(n)' "$MLSWARM_HOME/controller/jobs.jsonl" "$1"
}
meta_attempt() { json 'd["attempt"]' <"$MLSWARM_HOME/models/$1/meta.json"; }
succeeded() { [[ $(job "$1" 'd["state"]') == succeeded ]]; }
# once_and_by_its_attempt ID: succeeded, one journal record, meta.json by the recorded attempt.
once_and_by_its_attempt() {
  local attempts records meta
  attempts=$(job "$1" 'd["attempts"]') records=$(succeeded_records "$1") meta=$(meta_attempt "$1")
  echo "job $1: attempts $attempts, $records succeeded record(s), meta.json by attempt $meta"
  [[ $records == 1 && $meta == "$attempts" ]]
}

# --- the cluster ---------------------------------------------------------------------------
mkdir -p "$MLSWARM_HOME" "$MLSWARM_SECRETS_DIR"
label 1 controller && label 3 controller && label 2 trainer
deploy swarm/01_init.sh >/dev/null && deploy swarm/03_deploy.sh >/dev/null || { fail "deploy"; finish; }
api_token=$(cat "$MLSWARM_SECRETS_DIR/api_token")
if poll 180 has_trainers 1; then
  pass "stack deployed: controller replicas on nodes 1 and 3, one trainer on node 2 ($((SECONDS - start)) s in all)"
else
  fail "the controller lists $(trainer_count) trainers"; swarm_docker service ps ml_train ml_controller | head; finish
fi

# --- 1. node B lost mid-job ---------------------------------------------------------------
spec() {  # spec ID TRAINERS EXAMPLES EPOCHS
  printf '{"job_id": "%s", "model_id": "%s", "trainers": %s, "example_idxs": [0, %s], "test_idxs": [0, 1000],
    "train_opts": {"epochs": %s, "batch_size": 64, "checkpoint_every_steps": 20}}' "$1" "$1" "$2" "$3" "$4"
}
running_with_steps() { [[ $(job "$1" 'd["state"] == "running" and d["step"] >= '"$2") == True ]]; }
submit "$(spec single 1 30000 50)" >/dev/null
poll 120 running_with_steps single 1 || { fail "job single never ran"; finish; }
label 3 trainer && swarm_docker service scale --detach ml_train=2 >/dev/null && poll 120 has_trainers 2
submit "$(spec ranks 2 20000 3)" >/dev/null
poll 120 running_with_steps ranks 1 || fail "job ranks never ran: $(api /jobs/ranks)"
label 1 trainer && swarm_docker service scale --detach ml_train=3 >/dev/null && poll 120 has_trainers 3
single_nodes=$(nodes_of_job single) ranks_nodes=$(nodes_of_job ranks)
if [[ $single_nodes == "2 " && $ranks_nodes == "2 3 " ]]; then
  pass "job single trains on node 2 (B), job ranks on nodes 2 and 3 (B, C); a trainer on node 1 too"
else
  fail "placement: single on nodes '$single_nodes', ranks on '$ranks_nodes'"
fi
# Both have checkpoints (every 20 steps) before B goes, and both are far from done: ranks is at
# its first checkpoint of three epochs, single has 50 epochs.
poll 180 running_with_steps single 20; poll 180 running_with_steps ranks 20
echo "  before the kill: single $(job single '"epoch %d step %d, %.1f%% done" % (d["epoch"], d["step"], 100 * d["progress"])'), ranks $(job ranks '"epoch %d step %d, %.1f%% done" % (d["epoch"], d["step"], 100 * d["progress"])')"
before_single=$(job single 'd["attempts"]') before_ranks=$(job ranks 'd["attempts"]')
node_kill 2
unavailable=" 2 "
killed_at=$(now)
# again ID ATTEMPTS [NODE]: "trains again": a raised attempt past its first step (running, or
# already succeeded: a short job can end between two polls) on nodes other than NODE (default 2).
again() {
  [[ $(job "$1" "d['state'] in ('running', 'succeeded') and d['attempts'] > $2 and d['step'] > 0") == True ]] ||
    return 1
  [[ $(nodes_of_job "$1") != *"${3:-2}"* ]]
}
single_again="" ranks_again=""
both_again() {
  [[ -z $single_again ]] && again single "$before_single" && single_again=$(since "$killed_at")
  [[ -z $ranks_again ]] && again ranks "$before_ranks" && ranks_again=$(since "$killed_at")
  [[ -n $single_again && -n $ranks_again ]]
}
poll 240 both_again
resumed_lines() { trainer_logs | grep -E "job (single|ranks) model [a-z]+: resuming from checkpoint" | cut -c1-150; }
both_resumed() { resumed=$(resumed_lines) && grep -q "job single" <<<"$resumed" && grep -q "job ranks" <<<"$resumed"; }
resumed=""
poll 60 both_resumed
echo "$resumed" | sed 's/^/  /'
if [[ -n $single_again && -n $ranks_again ]] && both_resumed; then
  pass "node B killed: job single trains again after $single_again s (attempt $(job single 'd["attempts"]'), nodes $(nodes_of_job single)), job ranks after $ranks_again s (attempt $(job ranks 'd["attempts"]'), nodes $(nodes_of_job ranks)), both from their checkpoints"
else
  fail "after node B was killed: single again '${single_again}' ranks again '${ranks_again}'; $(api /jobs/single) $(api /jobs/ranks)"
fi
api /jobs/single -X DELETE >/dev/null
cancelled() { [[ $(job "$1" 'd["state"]') == cancelled ]]; }
if poll 60 cancelled single && poll 600 succeeded ranks && out=$(once_and_by_its_attempt ranks); then
  pass "ranks succeeded exactly once: $(tr '\n' ';' <<<"$out"); single (50 epochs) cancelled once it trained again"
else
  fail "after node B: $(tr '\n' ';' <<<"${out:-}") $(api /jobs/single) $(api /jobs/ranks)"
fi

# --- 2. node B back ---------------------------------------------------------------------------
back_at=$SECONDS
node_start 2
unavailable=" "
node_ready() { [[ $(swarm_docker node inspect -f '{{.Status.State}}' node-2 2>/dev/null) == ready ]]; }
poll 120 node_ready || fail "node 2 did not rejoin the swarm"
rejoined=$((SECONDS - back_at))
swarm_docker service scale --detach ml_train=4 >/dev/null
trainer_on_2() { has_trainers 4 && swarm_docker node ps -f desired-state=running node-2 2>/dev/null | grep -q ml_train; }
poll 180 trainer_on_2 || fail "no trainer on node 2 after scale ml_train=4: $(swarm_docker node ps node-2 | head -5)"
submit "$(spec everywhere 4 6000 1)" >/dev/null
poll 120 running_with_steps everywhere 1
everywhere_nodes=$(nodes_of_job everywhere)
if [[ $everywhere_nodes == *2* ]] && poll 300 succeeded everywhere; then
  pass "node B rejoined in $rejoined s; after docker service scale ml_train=4 a job with a rank on each trainer ran on nodes $everywhere_nodes and succeeded"
else
  fail "job everywhere: nodes '$everywhere_nodes', $(api /jobs/everywhere)"
fi

# --- 3. the leader's node killed under load ---------------------------------------------------
leader_address=$(api /status | json 'd["controller"]["leader"]')
leader_node=$(node_of "$leader_address")
other_node=$([[ $leader_node == 1 ]] && echo 3 || echo 1)
load() {
  node_docker 2 run --rm --network "$MLSWARM_NETWORK" --user 0 -v "$MLSWARM_SECRETS_DIR:/secrets:ro" \
    --entrypoint /usr/local/bin/mlswarm ml_controller --url http://tasks.ml_controller:48515 \
    --token-file /secrets/api_token load --model ranks --warmup 0 "$@"
}
load_ready() { load --clients 1 --seconds 0.2 >/dev/null 2>&1; }
if [[ $leader_node == 1 || $leader_node == 3 ]] && poll 60 load_ready; then
  load --clients 4 --seconds 40 --label leader-node-killed >"$MLSWARM_NODES_SHARED/load.json" 2>"$MLSWARM_NODES_SHARED/load.err" &
  load_pid=$!
  sleep 10  # pacing, not synchronisation: the load runs a while before the kill
  node_kill "$leader_node"
  unavailable=" $leader_node "
  killed_at=$(now)
  leads() { [[ $(role_of "$other_node") == leader ]]; }
  poll 60 leads && takeover=$(since "$killed_at")
  wait "$load_pid"
  result=$(cat "$MLSWARM_NODES_SHARED/load.json")
  echo "  $result"
  sent=$(json 'd["sent"]' <<<"$result") load_failed=$(json 'd["failed"]' <<<"$result")
  if [[ -n ${takeover:-} && -n $sent && $load_failed == 0 ]]; then
    pass "leader's node $leader_node killed: node $other_node's replica led after $takeover s; $sent /predicts through both replicas, none failed"
  else
    fail "leader's node killed: takeover '${takeover:-none}', load sent ${sent:-?} failed ${load_failed:-?}"
    head -3 "$MLSWARM_NODES_SHARED/load.err"
  fi
  node_start "$leader_node"
  unavailable=" "
  controllers_back() { [[ $(role_of "$leader_node") == follower ]]; }
  poll 180 controllers_back || fail "the replica on node $leader_node did not come back as a follower"
else
  fail "leader '$leader_address' on node '$leader_node'; load never got an answer"
fi

# --- 4. a node cut off ---------------------------------------------------------------------------
leader_node=$(node_of "$(api /status | json 'd["controller"]["leader"]')")
# A job on a node other than the leader's: submitted one by one until one lands there (the
# others simply run).
cut_job="" cut_node=""
for n in 1 2 3 4; do
  submit "$(spec "cut-$n" 1 30000 2)" >/dev/null
  poll 120 running_with_steps "cut-$n" 1 || continue
  where=$(nodes_of_job "cut-$n")
  if [[ ${where// /} != "$leader_node" ]]; then cut_job=cut-$n cut_node=${where// /}; break; fi
done
[[ -n $cut_job ]] || { fail "no job landed off the leader's node $leader_node"; finish; }
poll 180 running_with_steps "$cut_job" 20
before_cut=$(job "$cut_job" 'd["attempts"]')
node_cut "$cut_node"
unavailable=" $cut_node "
cut_at=$(now)
cut_again=""
moved() { again "$cut_job" "$before_cut" "$cut_node"; }
# The cut-off trainer, asked on its own node (docker exec): the old attempt's state there.
stale_status() {
  local c
  for c in $(node_docker "$cut_node" ps -q -f name=ml_train); do
    node_docker "$cut_node" exec "$c" ml_trainer --fetch http://127.0.0.1:48516/status 2>/dev/null |
      json "' '.join(f'{j[\"state\"]}@step{j[\"step\"]}' for j in d['jobs'] if j['job_id'] == '$cut_job' and j['attempts'] == $before_cut)"
  done | tr '\n' ' '
}
stale_running_until="" stale_end=""
watch_stale() {
  local state
  state=$(stale_status)
  case $state in
    *running* | *queued*) stale_running_until="$(since "$cut_at") s ($state)" ;;
    *[a-z]*) [[ -n $stale_end ]] || stale_end="$(since "$cut_at") s ($state)" ;;
  esac
}
moved_watching() { watch_stale; moved; }
poll 240 moved_watching && cut_again=$(since "$cut_at")
stale_ended() { watch_stale; [[ -n $stale_end ]] || succeeded "$cut_job"; }
poll 300 stale_ended
if [[ -n $cut_again ]]; then
  pass "node $cut_node cut off: job $cut_job trains again after $cut_again s (attempt $(job "$cut_job" 'd["attempts"]'), node $(nodes_of_job "$cut_job")); the cut-off trainer's old attempt seen running: ${stale_running_until:-not caught}, ended: ${stale_end:-not while cut off}"
else
  fail "node $cut_node cut off: job $cut_job did not train again elsewhere: $(api "/jobs/$cut_job")"
fi
poll 600 succeeded "$cut_job"
meta_before=$(cat "$MLSWARM_HOME/models/$cut_job/meta.json" 2>/dev/null)
node_reconnect "$cut_node"
unavailable=" "
reconnected_at=$(now)
no_stale() { [[ $(stale_status) != *running* && $(stale_status) != *queued* ]]; }
poll 180 no_stale && converged=$(since "$reconnected_at")
# What the cut-off trainer did with the old attempt, from its log afterwards: it ran on after the
# cut until the fence (a later attempt's claim) or the controller's cancel ended it.
stale_log=$(trainer_logs "$cut_node" | grep -E "job $cut_job .*(superseded|stop|cancel)" | cut -c1-160)
echo "$stale_log" | sed 's/^/  /' | head -4
meta_after=$(cat "$MLSWARM_HOME/models/$cut_job/meta.json" 2>/dev/null)
if [[ -n ${converged:-} && -n $stale_log ]] && out=$(once_and_by_its_attempt "$cut_job") &&
   [[ $meta_before == "$meta_after" ]]; then
  pass "node $cut_node back: no copy of attempt $before_cut runs ($converged s after reconnecting), its log says how it ended; $out; meta.json unchanged by the stale attempt"
else
  fail "after reconnecting node $cut_node: converged '${converged:-}', the old attempt's end in its log: '${stale_log:-none}', ${out:-}, meta.json changed: $([[ $meta_before == "$meta_after" ]] && echo no || echo yes)"
fi
all_once=1
for id in $(api /jobs | json '" ".join(j["job_id"] for j in d["jobs"] if j["job_id"] != "single")'); do
  poll 600 succeeded "$id" && once_and_by_its_attempt "$id" >/dev/null || { all_once=0; echo "  job $id: $(api "/jobs/$id")"; }
done
if ((all_once)); then pass "every job of the test but the cancelled one succeeded exactly once"; else fail "a job did not succeed exactly once"; fi
finish
