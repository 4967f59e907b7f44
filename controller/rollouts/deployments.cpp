#include "deployments.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/ids.h"

namespace mlswarm {

using nlohmann::json;

namespace {

constexpr const char* kKind = "deployment";

bool live(const Deployment& d) { return d.rollout && !rollout_ended(d.rollout->state); }

json model_json(const ModelRef& m) { return {{"model_id", m.model_id}, {"version", m.version}}; }

ServingTarget target_of(const Deployment& d) {
  ServingTarget t;
  t.stable = d.stable;
  if (!live(d)) return t;
  const RolloutRecord& r = *d.rollout;
  t.state = r.state;
  t.phase = rollout_phase(r);
  if (r.state == RolloutState::kShadow || r.state == RolloutState::kCanary) t.candidate = r.spec.candidate;
  if (r.state == RolloutState::kShadow) t.shadow_percent = r.spec.shadow_percent;
  if (r.state == RolloutState::kCanary) t.weight = r.weight();
  t.compare = r.spec.gates.min_agreement > 0;
  return t;
}

}  // namespace

void require_valid_name(const std::string& name) { require_valid_id(name, "name"); }

json to_json(const Deployment& d) {
  json out = {
      {"name", d.name}, {"stable", model_json(d.stable)}, {"created_at", d.created_at}, {"updated_at", d.updated_at}};
  out["rollout"] = d.rollout ? to_json(*d.rollout) : json(nullptr);
  return out;
}

Deployment deployment_from_json(const json& j) {
  try {
    Deployment d;
    d.name = j.at("name").get<std::string>();
    d.stable = {j.at("stable").at("model_id").get<std::string>(), j.at("stable").at("version").get<int>()};
    if (!j.at("rollout").is_null()) d.rollout = rollout_record_from_json(j.at("rollout"));
    d.created_at = j.at("created_at").get<double>();
    d.updated_at = j.at("updated_at").get<double>();
    return d;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kDataError, fmt::format("a deployment record does not read back: {}", e.what()));
  }
}

DeploymentStore::DeploymentStore(JobRegistry& registry, std::function<ModelRef(const ModelRef&)> resolve,
                                 std::function<void(const ModelRef&)> pin)
    : registry_(registry), resolve_(std::move(resolve)), pin_(std::move(pin)) {}

std::optional<Deployment> DeploymentStore::change(const std::string& name,
                                                  const std::function<bool(Deployment&)>& edit) {
  std::optional<Deployment> out;
  registry_.update_document(kKind, name, [&](json& body) {
    if (body.empty()) return false;  // removed
    Deployment d = deployment_from_json(body);
    if (!edit(d)) return false;
    body = to_json(d);
    out = std::move(d);
    return true;
  });
  return out;
}

Deployment DeploymentStore::put(const std::string& name, ModelRef target, double now) {
  require_valid_name(name);
  require_valid_id(target.model_id, "model_id");
  target = resolve_(target);  // 404 for an unknown model or a version not kept
  if (pin_) pin_(target);
  for (int tries = 0; tries < 10; ++tries) {
    if (!registry_.find_document(kKind, name)) {
      try {
        Deployment d{name, target, std::nullopt, now, now};
        registry_.create_document(kKind, name, to_json(d));
        spdlog::info("deployment {}: serves model {} version {}", name, target.model_id, target.version);
        return d;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kConflict) throw;  // created meanwhile: update it instead
        continue;
      }
    }
    bool conflict = false;
    std::optional<Deployment> out;
    registry_.update_document(kKind, name, [&](json& body) {
      Deployment d = body.empty() ? Deployment{name, target, std::nullopt, now, now} : deployment_from_json(body);
      if (live(d)) return !(conflict = true);
      d.stable = target;
      d.updated_at = now;
      body = to_json(d);
      out = std::move(d);
      return true;
    });
    if (conflict) {
      throw Error(ErrorCode::kConflict, fmt::format("deployment {} has a rollout under way: abort it first", name),
                  "name");
    }
    if (out) {
      spdlog::info("deployment {}: serves model {} version {}", name, target.model_id, target.version);
      return *out;
    }
  }
  throw Error(ErrorCode::kConflict, fmt::format("deployment {} kept changing; try again", name), "name");
}

void DeploymentStore::remove(const std::string& name) {
  auto d = find(name);
  if (!d) throw Error(ErrorCode::kNotFound, fmt::format("unknown deployment '{}'", name), "name");
  if (live(*d)) {
    throw Error(ErrorCode::kConflict, fmt::format("deployment {} has a rollout under way: abort it first", name),
                "name");
  }
  // A removed record is an empty one: the journal's last line of a name wins.
  registry_.update_document(kKind, name, [](json& body) {
    if (body.empty()) return false;
    body = json::object();
    return true;
  });
  spdlog::info("deployment {}: removed (the name serves model {} again, if there is one)", name, name);
}

std::optional<Deployment> DeploymentStore::find(const std::string& name) const {
  auto body = registry_.find_document(kKind, name);
  if (!body || body->empty()) return std::nullopt;
  return deployment_from_json(*body);
}

std::vector<Deployment> DeploymentStore::list() const {
  std::vector<Deployment> out;
  for (const json& body : registry_.documents(kKind)) {
    if (body.empty()) continue;  // removed
    try {
      out.push_back(deployment_from_json(body));
    } catch (const Error& e) {
      spdlog::warn("a deployment record was skipped: {}", e.what());
    }
  }
  return out;
}

Deployment DeploymentStore::start_rollout(const std::string& name, RolloutSpec spec, double now) {
  if (!find(name)) throw Error(ErrorCode::kNotFound, fmt::format("unknown deployment '{}'", name), "name");
  spec.candidate = resolve_(spec.candidate);  // 404 for an unknown model or a version not kept
  if (pin_) pin_(spec.candidate);
  std::string conflict;
  auto changed = change(name, [&](Deployment& d) {
    if (live(d)) conflict = fmt::format("deployment {} has a rollout under way", name);
    if (d.stable == spec.candidate) conflict = fmt::format("deployment {} serves that version already", name);
    if (!conflict.empty()) return false;
    RolloutRecord r;
    r.name = name;
    r.spec = spec;
    r.stable = d.stable;
    r.started_at = now;
    r.phase_started_at = now;
    r.history.push_back({now, RolloutState::kEvaluating, 0, "started"});
    d.rollout = std::move(r);
    d.updated_at = now;
    return true;
  });
  if (!conflict.empty()) throw Error(ErrorCode::kConflict, conflict, "name");
  if (!changed) throw Error(ErrorCode::kNotFound, fmt::format("unknown deployment '{}'", name), "name");
  spdlog::info("deployment {}: rollout of model {} version {} started (stable: model {} version {})", name,
               spec.candidate.model_id, spec.candidate.version, changed->stable.model_id, changed->stable.version);
  return *changed;
}

Deployment DeploymentStore::abort(const std::string& name, double now) {
  bool none = false;
  auto changed = change(name, [&](Deployment& d) {
    if (!live(d)) return !(none = true);
    RolloutRecord& r = *d.rollout;
    r.state = RolloutState::kAborted;
    r.reason = "aborted by a client";
    r.phase_started_at = now;
    r.history.push_back({now, r.state, 0, r.reason});
    d.updated_at = now;
    return true;
  });
  if (none) throw Error(ErrorCode::kConflict, fmt::format("deployment {} has no rollout under way", name), "name");
  if (!changed) throw Error(ErrorCode::kNotFound, fmt::format("unknown deployment '{}'", name), "name");
  spdlog::warn("deployment {}: rollout aborted; model {} version {} serves everything", name, changed->stable.model_id,
               changed->stable.version);
  return *changed;
}

std::optional<Deployment> DeploymentStore::decide(const std::string& name, std::size_t history,
                                                  const RolloutDecision& decision, double now) {
  return change(name, [&](Deployment& d) {
    if (!live(d) || d.rollout->history.size() != history) return false;
    d.rollout = apply(*d.rollout, decision, now);
    if (d.rollout->state == RolloutState::kPromoted) d.stable = d.rollout->spec.candidate;
    d.updated_at = now;
    return true;
  });
}

bool DeploymentStore::claim_once(const std::string& key, double now) {
  try {
    registry_.create_document("deploy-claim", key, {{"at", now}});
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kConflict) return false;
    throw;
  }
}

std::uint64_t DeploymentStore::generation() const { return registry_.documents_generation(); }

bool DeploymentStore::claimed(const std::string& key) const {
  return registry_.find_document("deploy-claim", key).has_value();
}

void DeploymentStore::rebuild_cache() const {
  const std::uint64_t generation = registry_.documents_generation();
  std::map<std::string, ServingTarget> fresh;
  for (const Deployment& d : list()) fresh[d.name] = target_of(d);
  std::unique_lock lock(cache_mutex_);
  cache_ = std::move(fresh);
  cache_generation_ = generation;
}

std::optional<ServingTarget> DeploymentStore::target(const std::string& name) const {
  {
    std::shared_lock lock(cache_mutex_);
    if (cache_generation_ == registry_.documents_generation()) {
      auto it = cache_.find(name);
      if (it == cache_.end()) return std::nullopt;
      return it->second;
    }
  }
  rebuild_cache();
  std::shared_lock lock(cache_mutex_);
  auto it = cache_.find(name);
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

}  // namespace mlswarm
