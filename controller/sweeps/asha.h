#pragma once

// Asynchronous successive halving (ASHA, Li et al., MLSys 2020) as a pure function of what has
// happened: the trials so far and their metrics in, the one next thing to do out. No clock, no
// randomness, no state of its own, so that a controller replaying its journal after a crash
// computes the decisions it made before.
//
// Each trial climbs rungs of growing epochs. When a trainer is free, the best trial of the
// highest rung that earned a promotion (being in the top 1/eta of the trials that finished
// that rung) trains on to the next rung; failing that, a new trial starts at rung 0. A trial
// keeps its metric at every rung it finished, so a rung's ranking never forgets the trials
// that went on.

#include <optional>
#include <variant>
#include <vector>

namespace mlswarm {

/// The rungs: `min_epochs` ("r"), times `eta` per rung while below `max_epochs` ("R"), then
/// `max_epochs` itself.
struct AshaConfig {
  int min_epochs = 1;
  int eta = 3;
  int max_epochs = 9;

  bool operator==(const AshaConfig&) const = default;
};

/// The epochs each rung trains to: r, r*eta, r*eta^2, ... while below R, then R. So r=1, eta=3
/// gives 1, 3, 9 for R=9 and 1, 3, 9, 10 for R=10 (a short last rung: pick R = r*eta^k to
/// avoid it). r == R is one rung: random search. Throws Error(kInvalidArgument) unless
/// 1 <= r <= R and eta >= 2.
std::vector<int> rung_epochs(const AshaConfig& config);

/// One trial as the scheduler sees it. The controller builds these from its journal.
struct TrialView {
  int trial = 0;  ///< 0 .. max_trials - 1, each at most once
  /// metrics[k]: the test accuracy (higher is better) when the trial finished rung k; one per
  /// rung finished, so the trial trains toward (or, not running, stopped at) rung metrics.size().
  std::vector<double> metrics;
  bool running = false;  ///< its job is queued or running, toward rung metrics.size()
  /// Its job toward rung metrics.size() failed: it counts at that rung as the worst of it (a
  /// configuration that cannot train is a bad one) and never trains again.
  bool failed = false;
};

namespace asha {
/// Train `trial` on to rung `rung` (it finished rung - 1): rung_epochs(config)[rung] epochs.
struct Promote {
  int trial = 0;
  int rung = 0;
  bool operator==(const Promote&) const = default;
};
/// Start a new trial (the lowest unused id) at rung 0.
struct Start {
  int trial = 0;
  bool operator==(const Start&) const = default;
};
/// Nothing to do until a running trial finishes.
struct Wait {
  bool operator==(const Wait&) const = default;
};
/// The sweep is over: nothing runs, nothing is left to start or promote. `best_trial`: the
/// highest metric at the highest rung any trial finished (ties: the lower id; a trial that
/// failed later keeps what it finished); none when every trial failed before finishing a rung.
struct Done {
  std::optional<int> best_trial;
  bool operator==(const Done&) const = default;
};
}  // namespace asha

using AshaDecision = std::variant<asha::Promote, asha::Start, asha::Wait, asha::Done>;

/// What to do with the next free trainer, for a sweep of `max_trials` trials. Promotions come
/// first, from the highest rung down (within a rung: the better metric, then the lower id);
/// then a new trial while fewer than max_trials exist; then Wait while any runs; then Done.
/// Throws Error(kInvalidArgument, field "trials") for trials that contradict each other (a
/// repeated or out-of-range id, more metrics than rungs, running and failed at once, a trial
/// neither running nor failed that finished no rung, a completed one still running).
AshaDecision next_decision(const AshaConfig& config, int max_trials, const std::vector<TrialView>& trials);

enum class TrialState {
  kRunning,
  kPaused,     ///< finished a rung, not promoted, and may still be
  kStopped,    ///< finished a rung and can never be promoted: the sweep is over for it
  kCompleted,  ///< finished the last rung
  kFailed,
};

/// Each trial's state, in the order of `trials`. A paused trial of rung k is stopped once its
/// rank there (metric, then id) is below floor(M / eta), M being the most trials that can
/// still finish rung k (max_trials less those stopped or failed below it): later arrivals only
/// push it down, so no quota it could reach would include it. Throws as next_decision does.
std::vector<TrialState> classify(const AshaConfig& config, int max_trials, const std::vector<TrialView>& trials);

}  // namespace mlswarm
