#pragma once

// A rollout of a candidate model version onto a served name, as a pure decision: the rollout's
// record (what was decided so far) and the figures measured since its current phase began go
// in, the next decision comes out. No network, no clock of its own (the caller passes `now`), no
// LibTorch, so that a leader replaying the journal after a crash decides as the one before did.
// The executor (RolloutRunner, on the leader) journals every decision before it acts on it.
//
// The phases, after Flagger's and Argo Rollouts' analysis steps:
//   evaluating  stable and candidate classify the same held-out examples before any live
//               request sees the candidate; overall accuracy and every class's recall are judged.
//   shadow      for `shadow_seconds`, live requests are also classified by the candidate after
//               the client has the stable's answer; agreement on the top class, the candidate's
//               errors and p99 are judged.
//   canary      for each weight of `steps` in turn, `step_seconds` long: requests whose key hashes
//               below the weight are answered by the candidate (the stable classifies them too,
//               in the background, for agreement); the same gates judge each step's requests.
//   promoted    the last step passed: the deployment pins the candidate.
// Any failed gate rolls back at once, with the gate, its figure and its limit in the reason.
// Too few requests to judge a phase extends it, up to three times its length, then rolls back:
// rollback is the answer to doubt. `aborted` is a client's DELETE.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlswarm/job.h"

namespace mlswarm {

enum class RolloutState { kEvaluating, kShadow, kCanary, kPromoted, kRolledBack, kAborted };

template <>
struct EnumNames<RolloutState> {
  static constexpr std::array<std::pair<RolloutState, std::string_view>, 6> table{
      {{RolloutState::kEvaluating, "evaluating"},
       {RolloutState::kShadow, "shadow"},
       {RolloutState::kCanary, "canary"},
       {RolloutState::kPromoted, "promoted"},
       {RolloutState::kRolledBack, "rolled_back"},
       {RolloutState::kAborted, "aborted"}}};
};

/// Whether a rollout has ended (promoted, rolled back or aborted).
bool rollout_ended(RolloutState state);

/// A model version a name serves (version >= 1; 0 only in a spec: the latest when it starts).
struct ModelRef {
  std::string model_id;
  int version = 0;
  bool operator==(const ModelRef&) const = default;
};

/// The limits a candidate is judged by. A limit of 0 for max_p99_ms judges no latency.
struct RolloutGates {
  double max_accuracy_drop = 0.005;     ///< evaluation: stable accuracy - candidate accuracy
  double max_class_recall_drop = 0.03;  ///< evaluation: per class, stable recall - candidate recall
  double min_agreement = 0.9;           ///< live: share of compared requests with the same top class
  double max_error_rate = 0.01;         ///< live: the candidate's failed requests / its requests
  double max_p99_ms = 0;                ///< live: the candidate's p99 time in server
  bool operator==(const RolloutGates&) const = default;
};

/// POST /deployments/{name}/rollout, validated.
struct RolloutSpec {
  ModelRef candidate;
  /// [from, to) of the dataset's test split to evaluate on; nullopt: all of it.
  std::optional<std::pair<std::int64_t, std::int64_t>> eval_idxs;
  int shadow_seconds = 60;                 ///< 0: no shadow phase
  int shadow_percent = 100;                ///< the share of live requests shadowed
  std::vector<int> steps{5, 25, 50, 100};  ///< canary weights, rising, in 1..100
  int step_seconds = 120;
  int min_requests = 10;  ///< candidate requests needed to judge a live phase
  RolloutGates gates;
  bool operator==(const RolloutSpec&) const = default;
};

/// Parses a rollout request; Error(kInvalidArgument) naming the field (unknown fields too).
RolloutSpec parse_rollout_spec(const nlohmann::json& body);
/// A job's or a sweep's `deploy` ({"name", ...rollout fields}) as the rollout of `model_id`'s
/// latest version: errors name the field as "deploy.<field>".
RolloutSpec deploy_rollout_spec(const nlohmann::json& deploy, const std::string& model_id);
nlohmann::json to_json(const RolloutSpec& spec);

/// What the held-out evaluation measured, classes in the model's order.
struct EvaluationFigures {
  std::int64_t examples = 0;
  double stable_accuracy = 0;
  double candidate_accuracy = 0;
  std::vector<std::string> classes;
  std::vector<double> stable_recall;  ///< per class: the share of its examples classified right
  std::vector<double> candidate_recall;
};

/// What live traffic showed of the candidate during a phase, all replicas together.
struct TrafficFigures {
  std::int64_t requests = 0;  ///< the candidate's: answered (canary) or shadowed
  std::int64_t errors = 0;    ///< of those, failed
  double p99_ms = 0;          ///< the candidate's time in server
  std::int64_t compared = 0;  ///< requests both the stable and the candidate classified
  std::int64_t agreed = 0;    ///< of those, with the same top class
  std::int64_t stable_requests = 0;
};

/// One gate's verdict: `figure` beside `limit` (`at_most`: the figure must not exceed it).
struct GateResult {
  std::string gate;
  double figure = 0;
  double limit = 0;
  bool at_most = true;
  bool passed = true;
  bool operator==(const GateResult&) const = default;
};

/// A moment of a rollout's history.
struct RolloutEvent {
  double at = 0;
  RolloutState state = RolloutState::kEvaluating;
  int weight = 0;
  std::string reason;
};

/// A rollout as the journal keeps it.
struct RolloutRecord {
  std::string name;
  RolloutSpec spec;  ///< its candidate version pinned when it started
  ModelRef stable;   ///< what the name served when it started
  RolloutState state = RolloutState::kEvaluating;
  int step = -1;  ///< the canary step under way (index into spec.steps); -1 before
  double started_at = 0;
  double phase_started_at = 0;
  std::vector<GateResult> gates;  ///< the last phase's verdicts
  std::vector<RolloutEvent> history;
  std::string reason;  ///< why it ended (rolled back, aborted), or promoted
  /// The share of live requests the candidate answers now (0..100).
  int weight() const;
};

nlohmann::json to_json(const RolloutRecord& record);
/// Error(kDataError) for a record that does not read back.
RolloutRecord rollout_record_from_json(const nlohmann::json& j);

/// The phase a record is in, as a string every replica and the leader agree on: figures of one
/// phase are never counted in another (the rollout's start, its state, its step).
std::string rollout_phase(const RolloutRecord& record);

/// The next thing to do.
struct RolloutDecision {
  enum class Kind { kWait, kShadow, kCanaryStep, kPromote, kRollBack };
  Kind kind = Kind::kWait;
  int step = -1;  ///< kCanaryStep: the step to start
  std::string reason;
  std::vector<GateResult> gates;  ///< the verdicts behind it (empty for kWait)
};

/// The decision for `record` at `now` (seconds), given the held-out evaluation (while
/// evaluating: nullopt until it is done) and the live figures of the current phase.
RolloutDecision decide(const RolloutRecord& record, const std::optional<EvaluationFigures>& evaluation,
                       const TrafficFigures& phase, double now);

/// `record` after `decision` at `now`: its state, step, phase start, gates and history. kWait
/// changes nothing.
RolloutRecord apply(RolloutRecord record, const RolloutDecision& decision, double now);

/// Judges an evaluation and live figures against the gates (for the tests and the views).
std::vector<GateResult> judge_evaluation(const RolloutGates& gates, const EvaluationFigures& figures);
std::vector<GateResult> judge_traffic(const RolloutGates& gates, const TrafficFigures& figures);

/// The sticky split: a request's key (X-Request-Key, else the client's address) hashed into
/// 0..99 (FNV-1a); the candidate answers when it is below the weight.
int split_bucket(std::string_view key);
inline bool to_candidate(std::string_view key, int weight) { return split_bucket(key) < weight; }

}  // namespace mlswarm
