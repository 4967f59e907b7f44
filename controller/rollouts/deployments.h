#pragma once

// Served names: what each name serves (a pinned model version) and the rollout on it, as
// records of the job journal (kind "deployment"), fenced and termed like jobs and sweeps. The
// leader writes them; every replica reads them (a follower's journal refresh), and serving asks
// target() on every request, from a cache rebuilt when the journal's documents change.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "job_registry.h"
#include "rollout.h"

namespace mlswarm {

/// A served name: the version it pins and its rollout (a live one, or the last that ended).
struct Deployment {
  std::string name;
  ModelRef stable;
  std::optional<RolloutRecord> rollout;
  double created_at = 0;
  double updated_at = 0;
};

nlohmann::json to_json(const Deployment& deployment);
/// Error(kDataError) for a record that does not read back.
Deployment deployment_from_json(const nlohmann::json& j);

/// How serving answers a request for a name at this moment.
struct ServingTarget {
  ModelRef stable;
  std::optional<ModelRef> candidate;  ///< while a rollout is in its shadow or canary phase
  RolloutState state = RolloutState::kPromoted;
  int weight = 0;          ///< canary: the candidate's share of requests (0..100)
  int shadow_percent = 0;  ///< shadow: the share of requests the candidate also classifies
  /// canary: whether the stable also classifies the candidate's requests, in the background, for
  /// the agreement gate (only when that gate is on: min_agreement > 0)
  bool compare = false;
  /// Which phase of which rollout (started_at and step), so that figures of one phase are
  /// never counted in another.
  std::string phase;
};

/// Thread-safe: every change is a compare-and-set on the journal record. The registry is not
/// owned and must outlive the store.
class DeploymentStore {
 public:
  /// `resolve(model)`: the version that `model` names (version 0: the model's latest), when it
  /// is kept; throws Error(kNotFound) for an unknown model or a version not kept.
  /// `pin(version)`: keeps a version's files from being pruned (KEEP_VERSIONS) while a name
  /// may serve it; called before the record that pins it is written. Optional.
  DeploymentStore(JobRegistry& registry, std::function<ModelRef(const ModelRef&)> resolve,
                  std::function<void(const ModelRef&)> pin = {});

  /// PUT /deployments/{name}: pins `target` (version 0: the model's latest now). Error(kNotFound)
  /// for an unknown model or version, Error(kConflict) while a rollout on the name is live.
  Deployment put(const std::string& name, ModelRef target, double now);
  /// DELETE /deployments/{name}: Error(kNotFound), or Error(kConflict) while a rollout is live.
  void remove(const std::string& name);
  std::optional<Deployment> find(const std::string& name) const;
  std::vector<Deployment> list() const;
  /// Changes whenever a deployment may have changed (any journal document did).
  std::uint64_t generation() const;

  /// POST /deployments/{name}/rollout: the candidate's version pinned (0: its latest now), the
  /// rollout evaluating. Error(kNotFound) for no such deployment or candidate, Error(kConflict)
  /// while another rollout on the name is live, or when the candidate is what the name serves.
  Deployment start_rollout(const std::string& name, RolloutSpec spec, double now);
  /// DELETE /deployments/{name}/rollout: the stable serves everything again at once.
  /// Error(kNotFound) without a deployment, Error(kConflict) when no rollout is live.
  Deployment abort(const std::string& name, double now);
  /// The runner's compare-and-set: applies `decision` to the live rollout if it still has
  /// `history` events (nobody decided meanwhile); a promotion pins the candidate. nullopt when
  /// the rollout moved on or ended meanwhile.
  std::optional<Deployment> decide(const std::string& name, std::size_t history, const RolloutDecision& decision,
                                   double now);

  /// True the first time `key` is claimed (a job's or a sweep's deploy, done once however
  /// many leaders see it succeed); journaled.
  bool claim_once(const std::string& key, double now);
  /// Whether `key` was claimed already.
  bool claimed(const std::string& key) const;

  /// Serving's view of `name` (nullopt: no deployment: `name` is a model id), from a cache.
  std::optional<ServingTarget> target(const std::string& name) const;

 private:
  std::optional<Deployment> change(const std::string& name, const std::function<bool(Deployment&)>& edit);
  void rebuild_cache() const;

  JobRegistry& registry_;
  std::function<ModelRef(const ModelRef&)> resolve_;
  std::function<void(const ModelRef&)> pin_;
  mutable std::shared_mutex cache_mutex_;  ///< guards cache_ and cache_generation_
  mutable std::map<std::string, ServingTarget> cache_;
  mutable std::uint64_t cache_generation_ = UINT64_MAX;
};

/// A name that may be served: a valid id (Error(kInvalidArgument) naming `field` otherwise).
void require_valid_name(const std::string& name);

}  // namespace mlswarm
