#pragma once

// What the controller keeps of a sweep: its spec and every decision its searcher took, in
// order, as one record of the job journal (kind "sweep"). The trials' progress is not here: it
// is their jobs', so the record and the jobs together say where a sweep stands after a crash.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "asha.h"
#include "mlswarm/job.h"
#include "sweep_spec.h"

namespace mlswarm {

enum class SweepState { kRunning, kSucceeded, kFailed, kCancelled };

template <>
struct EnumNames<SweepState> {
  static constexpr std::array<std::pair<SweepState, std::string_view>, 4> table{
      {{SweepState::kRunning, "running"},
       {SweepState::kSucceeded, "succeeded"},
       {SweepState::kFailed, "failed"},
       {SweepState::kCancelled, "cancelled"}}};
};

template <>
struct EnumNames<TrialState> {
  static constexpr std::array<std::pair<TrialState, std::string_view>, 5> table{{{TrialState::kRunning, "running"},
                                                                                 {TrialState::kPaused, "paused"},
                                                                                 {TrialState::kStopped, "stopped"},
                                                                                 {TrialState::kCompleted, "completed"},
                                                                                 {TrialState::kFailed, "failed"}}};
};

/// One decision of the searcher, journaled before it is carried out.
struct SweepDecision {
  enum class Kind { kStart, kPromote, kStop };
  Kind kind = Kind::kStart;
  int trial = 0;
  int rung = 0;  ///< the rung the trial trains toward (start: 0, promote: k), or stopped at
  bool operator==(const SweepDecision&) const = default;
};

struct SweepRecord {
  SweepSpec spec;
  SweepState state = SweepState::kRunning;
  std::vector<SweepDecision> decisions;
  /// Set when the sweep is done (before its model is published): the best trial.
  std::optional<int> best_trial;
  bool published = false;  ///< the best trial's model copied to models/<sweep_id>
  std::string error;       ///< why it failed
  double created_at = 0;
  double finished_at = 0;
};

/// A decision as its own journal record ({"start": t}, {"promote": t, "rung": k}, {"stop": t,
/// "rung": k}), and back (Error(kDataError) for one that does not read back).
nlohmann::json to_json(const SweepDecision& decision);
SweepDecision decision_from_json(const nlohmann::json& j, int trials);

nlohmann::json to_json(const SweepRecord& record);
/// Throws Error(kDataError) for a record that does not read back (a journal line).
SweepRecord sweep_record_from_json(const nlohmann::json& j);

/// The trials of a sweep as ASHA sees them, from its decisions and its trials' jobs (`find`
/// gives a job by id, nullopt when it was not created yet: a decision journaled just before a
/// crash, so it counts as running). A rung's metric is its job's last test accuracy.
std::vector<TrialView> trial_views(const SweepRecord& record,
                                   const std::function<std::optional<JobRecord>(const std::string&)>& find);

/// The rung each started trial trains toward (or stopped at): the highest it was promoted to.
std::vector<int> top_rungs(const SweepRecord& record);

/// GET /sweeps/{id}: the spec's summary, state, each trial (params, rung, epochs, state,
/// accuracy, metrics per rung, job ids), the leaderboard's best, the trainer-seconds used.
nlohmann::json sweep_view(const SweepRecord& record,
                          const std::function<std::optional<JobRecord>(const std::string&)>& find);

}  // namespace mlswarm
