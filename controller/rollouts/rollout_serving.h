#pragma once

// Serving through served names, on every replica: which model version answers a request (a
// deployment's stable, or its candidate for a canary's share of request keys), the candidate's
// (or, in a canary, the stable's) second opinion in the background, and this replica's figures
// of the rollout's current phase, written where the leader reads them.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "deployments.h"
#include "model_server.h"

namespace mlswarm {

/// One replica's figures of one rollout phase: what TrafficFigures sums over the replicas.
struct PhaseCounters {
  std::string phase;
  std::int64_t requests = 0;  ///< the candidate's (answered in a canary, shadowed otherwise)
  std::int64_t errors = 0;
  std::int64_t stable_requests = 0;
  std::int64_t compared = 0;
  std::int64_t agreed = 0;
  std::int64_t shadow_dropped = 0;            ///< second opinions dropped because their queue was full
  std::vector<std::int64_t> latency_buckets;  ///< the candidate's time in server, by kLatencyBounds
};

/// Upper bounds (ms) of the latency buckets; the last is everything above.
inline const std::vector<double> kLatencyBoundsMs{0.25, 0.5, 1,  2,   3,   5,   7.5, 10,   15,   20,
                                                  30,   50,  75, 100, 150, 250, 500, 1000, 2500, 5000};

nlohmann::json to_json(const PhaseCounters& counters);
/// Error(kDataError) for a file that does not read back.
PhaseCounters phase_counters_from_json(const nlohmann::json& j);
/// The sum of several replicas' counters of the same phase, as the gates judge them (p99:
/// the upper bound of the bucket the 99th percentile falls in).
TrafficFigures sum_figures(const std::vector<PhaseCounters>& replicas);

/// Thread-safe. One background thread runs second opinions (a bounded queue: a live request
/// never waits for one, and one that does not fit is dropped and counted), writes this
/// replica's figures every `flush_every`, and loads and warms every version a deployment pins
/// or a live rollout names as soon as this replica's journal shows it (not on its first request). The store and the
/// model server are not owned and must outlive it.
class RolloutServing {
 public:
  struct Options {
    std::filesystem::path dir;  ///< HOME_DIR/controller/rollouts
    std::string replica;        ///< this replica's file name (its address, made safe)
    std::size_t max_shadow_queue = 256;
    std::chrono::milliseconds flush_every{500};
  };
  RolloutServing(const DeploymentStore& deployments, ModelServer& models, Options options);
  ~RolloutServing();
  RolloutServing(const RolloutServing&) = delete;
  RolloutServing& operator=(const RolloutServing&) = delete;

  /// Who answers a request for `name` (a deployment's name, or a model id), keyed by `key`.
  struct Choice {
    std::shared_ptr<const LoadedModel> model;
    std::string deployment;  ///< empty: `name` was a model id
    std::string variant;     ///< "stable", "candidate", or "" for a model id
    std::optional<ServingTarget> target;
    std::shared_ptr<const LoadedModel> other;  ///< the second opinion's model, if one is due
  };
  /// Error(kInvalidArgument, "version") when a deployment's name comes with a version (it
  /// serves its pinned one), and whatever loading the model throws.
  Choice choose(const std::string& name, int version, const std::string& key);

  /// After `choice` answered (`result`, or failed when `result` is null) in `ms`: the figures,
  /// and the second opinion queued with `pixels` when one is due.
  void answered(const Choice& choice, std::vector<float> pixels, std::int64_t count, const PredictResult* result,
                double ms);

  /// This replica's counters of a deployment's current phase (for /metrics and tests).
  std::optional<PhaseCounters> counters(const std::string& deployment) const;

 private:
  static constexpr std::int64_t kMaxSecondOpinionBatch = 64;  ///< examples in one second-opinion pass
  struct Shadow {
    std::string deployment;
    std::string phase;
    std::shared_ptr<const LoadedModel> model;
    bool of_candidate = false;  ///< the candidate's opinion (shadow phase) or the stable's (canary)
    std::vector<float> pixels;
    std::int64_t count = 0;
    std::vector<int> answered_classes;
  };
  PhaseCounters& counters_of(const std::string& deployment, const std::string& phase);  // mutex_ held
  void run(std::stop_token stop);
  std::vector<Shadow> next_batch();  // mutex_ held
  void second_opinions(const std::vector<Shadow>& batch);
  void flush();
  void warm_new_versions();

  const DeploymentStore& deployments_;
  ModelServer& models_;
  Options options_;
  mutable std::mutex mutex_;  ///< guards counters_, queue_, dirty_
  std::condition_variable_any wake_;
  std::map<std::string, PhaseCounters> counters_;  ///< by deployment: its current phase's
  std::deque<Shadow> queue_;
  bool dirty_ = false;
  std::uint64_t warmed_generation_ = 0;  ///< the deployments' generation last warmed (thread_ only)
  std::jthread thread_;                  ///< last: joined before the rest goes
};

/// A replica's name as a file name: [A-Za-z0-9.-] kept, anything else '_'.
std::string replica_file_name(const std::string& address);

}  // namespace mlswarm
