#pragma once

// The leader's side of rollouts: one pass per cluster tick over the live rollouts. For each,
// the held-out evaluation (run on a thread of its own: it takes seconds), or the figures of its
// current phase summed over every replica's file, then decide() and the decision journaled
// through the store's compare-and-set before anything acts on it. A new leader takes a rollout
// up where the journal left it: a live phase's figures are in the replicas' files (its clock
// runs from the journaled phase start), and an evaluation under way is run again.

#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "deployments.h"
#include "rollout.h"
#include "rollout_serving.h"

namespace mlswarm {

class DatasetCache;

/// Classifies held-out examples (the dataset's test split, or `idxs` of it) with both versions:
/// overall accuracy and each class's recall. Throws Error(kInvalidArgument) when the two do not
/// classify the same classes of the same inputs, and what loading either throws.
EvaluationFigures evaluate_held_out(ModelServer& models, DatasetCache& datasets, const ModelRef& stable,
                                    const ModelRef& candidate,
                                    const std::optional<std::pair<std::int64_t, std::int64_t>>& idxs);

/// A model to put on a served name once: a job's or a sweep's `deploy`, after it succeeded.
struct DeployRequest {
  std::string key;  ///< "job/<id>" or "sweep/<id>": done once
  std::string name;
  std::string model_id;
  nlohmann::json deploy;  ///< {"name", ...rollout fields}
};

/// Thread-safe as tick() runs on one thread (the cluster loop) and the evaluations on another.
class RolloutRunner {
 public:
  /// Jobs and sweeps that succeeded with a `deploy` (each pass; the runner acts on each once).
  using PendingDeploys = std::function<std::vector<DeployRequest>()>;
  using Evaluate = std::function<EvaluationFigures(const ModelRef& stable, const ModelRef& candidate,
                                                   const std::optional<std::pair<std::int64_t, std::int64_t>>& idxs)>;
  /// `dir`: HOME_DIR/controller/rollouts (the replicas' figures); `now`: the wall clock (tests
  /// pass their own).
  RolloutRunner(DeploymentStore& store, std::filesystem::path dir, Evaluate evaluate, std::function<double()> now = {},
                PendingDeploys pending = {});
  ~RolloutRunner();
  RolloutRunner(const RolloutRunner&) = delete;
  RolloutRunner& operator=(const RolloutRunner&) = delete;

  /// One pass (the leader's cluster loop). Errors are logged per deployment.
  void tick();

  /// The figures of `name`'s current phase, all replicas together.
  TrafficFigures figures(const std::string& name, const std::string& phase) const;

 private:
  struct Outcome {
    std::optional<EvaluationFigures> figures;
    std::string error;
  };
  /// The evaluation of rollout `key`: started when there is none, nullopt while it runs.
  std::optional<Outcome> evaluation(const std::string& key, const RolloutRecord& record);
  void advance(const Deployment& deployment);
  /// A succeeded job's or sweep's model onto its name: a rollout through the gate, or, when
  /// the name serves nothing yet, pinned.
  void deploy(const DeployRequest& request, double now);

  DeploymentStore& store_;
  std::filesystem::path dir_;
  Evaluate evaluate_;
  std::function<double()> now_;
  PendingDeploys pending_;
  std::mutex mutex_;                         ///< guards outcomes_ and running_
  std::map<std::string, Outcome> outcomes_;  ///< by rollout (name and start)
  std::string running_;                      ///< the rollout being evaluated now, if any
  std::jthread evaluator_;                   ///< last: joined first
};

}  // namespace mlswarm
