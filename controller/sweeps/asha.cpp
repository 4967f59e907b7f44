#include "asha.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

constexpr double kWorst = -std::numeric_limits<double>::infinity();

[[noreturn]] void invalid_trials(std::string message) {
  throw Error(ErrorCode::kInvalidArgument, std::move(message), "trials");
}

/// A metric as ranked: NaN (a diverged run) is the worst, so that the order stays total.
double score(double metric) { return std::isnan(metric) ? kWorst : metric; }

std::size_t finished(const TrialView& t) { return t.metrics.size(); }

/// One trial's place in a rung's ranking.
struct Entry {
  double metric = kWorst;
  int trial = 0;
  std::size_t index = 0;  ///< in the caller's vector
};

/// The trials that finished rung k, or failed at it (as the worst), best first: the higher
/// metric, then the lower id, so that equal metrics still give one order.
std::vector<Entry> ranking(const std::vector<TrialView>& trials, std::size_t k) {
  std::vector<Entry> ranked;
  for (std::size_t i = 0; i < trials.size(); ++i) {
    const TrialView& t = trials[i];
    if (finished(t) > k) {
      ranked.push_back({score(t.metrics[k]), t.trial, i});
    } else if (t.failed && finished(t) == k) {
      ranked.push_back({kWorst, t.trial, i});
    }
  }
  std::sort(ranked.begin(), ranked.end(), [](const Entry& a, const Entry& b) {
    return a.metric != b.metric ? a.metric > b.metric : a.trial < b.trial;
  });
  return ranked;
}

/// Finished rung k and went no further: the only trials a promotion from rung k can pick.
bool waiting_at(const TrialView& t, std::size_t k) { return finished(t) == k + 1 && !t.running && !t.failed; }

void check_trial(const TrialView& t, std::size_t rungs, int max_trials, std::vector<bool>& seen) {
  if (t.trial < 0 || t.trial >= max_trials) {
    invalid_trials(fmt::format("trial {} is outside 0..{}", t.trial, max_trials - 1));
  }
  if (seen[static_cast<std::size_t>(t.trial)]) invalid_trials(fmt::format("trial {} is listed twice", t.trial));
  seen[static_cast<std::size_t>(t.trial)] = true;
  if (finished(t) > rungs) invalid_trials(fmt::format("trial {} has more metrics than the {} rungs", t.trial, rungs));
  if (t.running && t.failed) invalid_trials(fmt::format("trial {} is both running and failed", t.trial));
  if (finished(t) == rungs && (t.running || t.failed)) {
    invalid_trials(fmt::format("trial {} finished the last rung, so it can neither run nor fail", t.trial));
  }
  if (finished(t) == 0 && !t.running && !t.failed) {
    invalid_trials(fmt::format("trial {} finished no rung yet neither runs nor failed", t.trial));
  }
}

/// The number of rungs, after checking that the inputs describe a possible sweep.
std::size_t checked_rungs(const AshaConfig& config, int max_trials, const std::vector<TrialView>& trials) {
  const std::size_t rungs = rung_epochs(config).size();
  if (max_trials < 1) throw Error(ErrorCode::kInvalidArgument, "max_trials must be at least 1", "max_trials");
  std::vector<bool> seen(static_cast<std::size_t>(max_trials), false);
  for (const TrialView& t : trials) check_trial(t, rungs, max_trials, seen);
  return rungs;
}

int lowest_unused_id(const std::vector<TrialView>& trials, int max_trials) {
  std::vector<bool> used(static_cast<std::size_t>(max_trials), false);
  for (const TrialView& t : trials) used[static_cast<std::size_t>(t.trial)] = true;
  return static_cast<int>(std::find(used.begin(), used.end(), false) - used.begin());
}

/// The highest metric at the highest rung finished; ties go to the lower id.
std::optional<int> best_trial(const std::vector<TrialView>& trials) {
  const TrialView* best = nullptr;
  for (const TrialView& t : trials) {
    if (finished(t) == 0) continue;
    if (best == nullptr || finished(t) > finished(*best) ||
        (finished(t) == finished(*best) &&
         (score(t.metrics.back()) > score(best->metrics.back()) ||
          (score(t.metrics.back()) == score(best->metrics.back()) && t.trial < best->trial)))) {
      best = &t;
    }
  }
  return best == nullptr ? std::nullopt : std::optional<int>(best->trial);
}

}  // namespace

std::vector<int> rung_epochs(const AshaConfig& config) {
  if (config.min_epochs < 1 || config.max_epochs < config.min_epochs || config.eta < 2) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("ASHA needs 1 <= r <= R and eta >= 2 (r={}, eta={}, R={})", config.min_epochs, config.eta,
                            config.max_epochs),
                "scheduler");
  }
  std::vector<int> rungs;
  // 64 bits: r * eta^k below R fits an int, one more factor of eta may not.
  for (std::int64_t epochs = config.min_epochs; epochs < config.max_epochs; epochs *= config.eta) {
    rungs.push_back(static_cast<int>(epochs));
  }
  rungs.push_back(config.max_epochs);
  return rungs;
}

AshaDecision next_decision(const AshaConfig& config, int max_trials, const std::vector<TrialView>& trials) {
  const std::size_t rungs = checked_rungs(config, max_trials, trials);
  const auto eta = static_cast<std::size_t>(config.eta);
  // The highest rung first: a trial close to the end is the cheapest way to a finished model.
  for (std::size_t k = rungs - 1; k-- > 0;) {
    const auto ranked = ranking(trials, k);
    for (std::size_t place = 0; place < ranked.size() / eta; ++place) {
      if (waiting_at(trials[ranked[place].index], k)) {
        return asha::Promote{ranked[place].trial, static_cast<int>(k + 1)};
      }
    }
  }
  if (trials.size() < static_cast<std::size_t>(max_trials)) return asha::Start{lowest_unused_id(trials, max_trials)};
  if (std::any_of(trials.begin(), trials.end(), [](const TrialView& t) { return t.running; })) return asha::Wait{};
  return asha::Done{best_trial(trials)};
}

std::vector<TrialState> classify(const AshaConfig& config, int max_trials, const std::vector<TrialView>& trials) {
  const std::size_t rungs = checked_rungs(config, max_trials, trials);
  std::vector<TrialState> states;
  states.reserve(trials.size());
  for (const TrialView& t : trials) {
    states.push_back(t.running              ? TrialState::kRunning
                     : t.failed             ? TrialState::kFailed
                     : finished(t) == rungs ? TrialState::kCompleted
                                            : TrialState::kPaused);
  }
  // Rung by rung from the bottom: who is stopped at rung k bounds how many can reach k + 1.
  std::size_t gone_below = 0;  // trials stopped or failed below the current rung
  for (std::size_t k = 0; k + 1 < rungs; ++k) {
    const std::size_t reachable_quota =
        (static_cast<std::size_t>(max_trials) - gone_below) / static_cast<std::size_t>(config.eta);
    const auto ranked = ranking(trials, k);
    for (std::size_t place = 0; place < ranked.size(); ++place) {
      const std::size_t i = ranked[place].index;
      if (waiting_at(trials[i], k) && place >= reachable_quota) states[i] = TrialState::kStopped;
      if (states[i] == TrialState::kStopped || (states[i] == TrialState::kFailed && finished(trials[i]) == k)) {
        ++gone_below;
      }
    }
  }
  return states;
}

}  // namespace mlswarm
