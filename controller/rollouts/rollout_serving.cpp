#include "rollout_serving.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/log.h"
#include "mlswarm/metrics.h"

namespace mlswarm {

using nlohmann::json;

std::string replica_file_name(const std::string& address) {
  std::string out = address;
  for (char& c : out) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  }
  return out.empty() ? std::string("replica") : out;
}

json to_json(const PhaseCounters& c) {
  return {{"phase", c.phase},
          {"requests", c.requests},
          {"errors", c.errors},
          {"stable_requests", c.stable_requests},
          {"compared", c.compared},
          {"agreed", c.agreed},
          {"shadow_dropped", c.shadow_dropped},
          {"latency_buckets", c.latency_buckets}};
}

PhaseCounters phase_counters_from_json(const json& j) {
  PhaseCounters c;
  if (!j.is_object() || !j.contains("phase") || !j["phase"].is_string() || j["phase"].get<std::string>().size() > 256) {
    throw Error(ErrorCode::kDataError, "a rollout figures file without its phase");
  }
  c.phase = j["phase"].get<std::string>();
  c.requests = checked_int(j.at("requests"), 0, INT64_MAX / 2, "requests");
  c.errors = checked_int(j.at("errors"), 0, INT64_MAX / 2, "errors");
  c.stable_requests = checked_int(j.at("stable_requests"), 0, INT64_MAX / 2, "stable_requests");
  c.compared = checked_int(j.at("compared"), 0, INT64_MAX / 2, "compared");
  c.agreed = checked_int(j.at("agreed"), 0, INT64_MAX / 2, "agreed");
  c.shadow_dropped = checked_int_or(j, "shadow_dropped", 0, 0, INT64_MAX / 2);
  const json& buckets = j.at("latency_buckets");
  if (!buckets.is_array() || buckets.size() > kLatencyBoundsMs.size() + 1) {
    throw Error(ErrorCode::kDataError, "latency_buckets must be a list of counts");
  }
  for (const auto& b : buckets) c.latency_buckets.push_back(checked_int(b, 0, INT64_MAX / 2, "latency bucket"));
  return c;
}

TrafficFigures sum_figures(const std::vector<PhaseCounters>& replicas) {
  TrafficFigures f;
  std::vector<std::int64_t> buckets(kLatencyBoundsMs.size() + 1, 0);
  for (const auto& c : replicas) {
    f.requests += c.requests;
    f.errors += c.errors;
    f.stable_requests += c.stable_requests;
    f.compared += c.compared;
    f.agreed += c.agreed;
    for (std::size_t i = 0; i < c.latency_buckets.size() && i < buckets.size(); ++i) buckets[i] += c.latency_buckets[i];
  }
  std::int64_t total = 0;
  for (auto b : buckets) total += b;
  if (total == 0) return f;
  const auto rank = static_cast<std::int64_t>(0.99 * static_cast<double>(total - 1)) + 1;
  std::int64_t seen = 0;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    seen += buckets[i];
    if (seen >= rank) {
      f.p99_ms = i < kLatencyBoundsMs.size() ? kLatencyBoundsMs[i] : 1e9;
      break;
    }
  }
  return f;
}

RolloutServing::RolloutServing(const DeploymentStore& deployments, ModelServer& models, Options options)
    : deployments_(deployments), models_(models), options_(std::move(options)) {
  thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
}

RolloutServing::~RolloutServing() {
  thread_.request_stop();
  wake_.notify_all();
}

RolloutServing::Choice RolloutServing::choose(const std::string& name, int version, const std::string& key) {
  Choice choice;
  choice.target = deployments_.target(name);
  if (!choice.target) {
    choice.model = models_.model(name, version);
    return choice;
  }
  if (version != 0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is a deployment: it serves its pinned version; ask the model id for another", name),
                "version");
  }
  const ServingTarget& t = *choice.target;
  choice.deployment = name;
  const bool canary = t.candidate && t.weight > 0 && to_candidate(key, t.weight);
  const bool shadowed = t.candidate && t.shadow_percent > 0 && to_candidate(key + "/shadow", t.shadow_percent);
  if (canary || shadowed) {
    try {
      auto candidate = models_.model(t.candidate->model_id, t.candidate->version);
      (canary ? choice.model : choice.other) = std::move(candidate);
    } catch (const Error&) {
      // A candidate that does not load fails its gate, never the client: the stable answers.
      std::lock_guard lock(mutex_);
      PhaseCounters& c = counters_of(name, t.phase);
      ++c.requests;
      ++c.errors;
      dirty_ = true;
    }
  }
  const bool by_candidate = canary && choice.model != nullptr;
  choice.variant = by_candidate ? "candidate" : "stable";
  if (by_candidate) {
    if (t.compare) choice.other = models_.model(t.stable.model_id, t.stable.version);  // for agreement
  } else {
    choice.model = models_.model(t.stable.model_id, t.stable.version);
    if (canary) choice.other = nullptr;
  }
  return choice;
}

PhaseCounters& RolloutServing::counters_of(const std::string& deployment, const std::string& phase) {
  PhaseCounters& c = counters_[deployment];
  if (c.phase != phase) {
    c = PhaseCounters{};
    c.phase = phase;
    c.latency_buckets.assign(kLatencyBoundsMs.size() + 1, 0);
  }
  return c;
}

void RolloutServing::answered(const Choice& choice, std::vector<float> pixels, std::int64_t count,
                              const PredictResult* result, double ms) {
  if (choice.deployment.empty() || !choice.target || !choice.target->candidate) return;
  const ServingTarget& t = *choice.target;
  std::lock_guard lock(mutex_);
  PhaseCounters& c = counters_of(choice.deployment, t.phase);
  dirty_ = true;
  if (choice.variant == "candidate") {
    ++c.requests;
    c.errors += result == nullptr ? 1 : 0;
    const auto bucket =
        std::lower_bound(kLatencyBoundsMs.begin(), kLatencyBoundsMs.end(), ms) - kLatencyBoundsMs.begin();
    ++c.latency_buckets[static_cast<std::size_t>(bucket)];
  } else {
    ++c.stable_requests;
  }
  if (!choice.other || result == nullptr) return;
  if (queue_.size() >= options_.max_shadow_queue) {
    ++c.shadow_dropped;
    Metrics::global().inc("mlswarm_shadow_dropped_total", {{"name", choice.deployment}});
    return;
  }
  queue_.push_back({choice.deployment, t.phase, choice.other, choice.variant == "stable", std::move(pixels), count,
                    result->class_idxs});
  wake_.notify_one();
}

void RolloutServing::second_opinions(const std::vector<Shadow>& batch) {
  // One forward pass for the batch (the serving thread's time is what a second opinion costs the
  // live requests); each request's latency is the batch's, as a live request's is its batch's.
  std::vector<float> pixels;
  std::int64_t count = 0;
  for (const Shadow& s : batch) {
    pixels.insert(pixels.end(), s.pixels.begin(), s.pixels.end());
    count += s.count;
  }
  const auto started = std::chrono::steady_clock::now();
  std::optional<PredictResult> other;
  try {
    other = models_.predict(batch.front().model, std::move(pixels), count);
  } catch (const std::exception& e) {
    if (log_allowed("shadow " + batch.front().deployment, std::chrono::seconds(60))) {
      spdlog::warn("deployment {}: a second opinion failed: {}", batch.front().deployment, e.what());
    }
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  std::lock_guard lock(mutex_);
  dirty_ = true;
  std::size_t offset = 0;  // the first of this request's examples in the batch's answer
  for (const Shadow& s : batch) {
    PhaseCounters& c = counters_of(s.deployment, s.phase);
    if (s.of_candidate) {  // the shadow phase: the candidate's own figures
      Metrics::global().inc("mlswarm_served_requests_total", {{"name", s.deployment}, {"variant", "shadow"}});
      ++c.requests;
      c.errors += other ? 0 : 1;
      const auto bucket =
          std::lower_bound(kLatencyBoundsMs.begin(), kLatencyBoundsMs.end(), ms) - kLatencyBoundsMs.begin();
      ++c.latency_buckets[static_cast<std::size_t>(bucket)];
    }
    if (!other) continue;
    for (std::size_t i = 0; i < static_cast<std::size_t>(s.count) && i < s.answered_classes.size(); ++i) {
      if (offset + i >= other->class_idxs.size()) break;
      ++c.compared;
      c.agreed += other->class_idxs[offset + i] == s.answered_classes[i] ? 1 : 0;
    }
    offset += static_cast<std::size_t>(s.count);
  }
}

std::vector<RolloutServing::Shadow> RolloutServing::next_batch() {
  // mutex_ held. The front request and those behind it for the same model version, phase and
  // example shape, up to kMaxSecondOpinionBatch examples.
  std::vector<Shadow> batch;
  std::int64_t examples = 0;
  for (auto it = queue_.begin(); it != queue_.end() && examples < kMaxSecondOpinionBatch;) {
    const bool joins = batch.empty() ||
                       (it->model == batch.front().model && it->phase == batch.front().phase &&
                        it->deployment == batch.front().deployment && it->of_candidate == batch.front().of_candidate &&
                        it->pixels.size() * static_cast<std::size_t>(batch.front().count) ==
                            batch.front().pixels.size() * static_cast<std::size_t>(it->count));
    if (!joins || (!batch.empty() && examples + it->count > kMaxSecondOpinionBatch)) {
      ++it;
      continue;
    }
    examples += it->count;
    batch.push_back(std::move(*it));
    it = queue_.erase(it);
  }
  return batch;
}

void RolloutServing::run(std::stop_token stop) {
  auto next_flush = std::chrono::steady_clock::now() + options_.flush_every;
  while (!stop.stop_requested()) {
    std::vector<Shadow> batch;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_until(lock, stop, next_flush, [this] { return !queue_.empty(); });
      batch = next_batch();
    }
    if (!batch.empty()) second_opinions(batch);
    if (std::chrono::steady_clock::now() >= next_flush) {
      flush();
      warm_new_versions();
      next_flush = std::chrono::steady_clock::now() + options_.flush_every;
    }
  }
}

void RolloutServing::warm_new_versions() {
  const std::uint64_t generation = deployments_.generation();
  if (generation == warmed_generation_) return;
  warmed_generation_ = generation;
  for (const Deployment& d : deployments_.list()) {
    std::vector<ModelRef> versions{d.stable};
    if (d.rollout && !rollout_ended(d.rollout->state)) versions.push_back(d.rollout->spec.candidate);
    for (const ModelRef& m : versions) {
      try {
        models_.model(m.model_id, m.version);  // loaded and warmed now, if it was not
      } catch (const std::exception& e) {
        if (log_allowed("warm " + m.model_id, std::chrono::seconds(60))) {
          spdlog::warn("deployment {}: model {} version {} does not load: {}", d.name, m.model_id, m.version, e.what());
        }
      }
    }
  }
}

void RolloutServing::flush() {
  std::map<std::string, PhaseCounters> snapshot;
  {
    std::lock_guard lock(mutex_);
    if (!dirty_) return;
    dirty_ = false;
    snapshot = counters_;
  }
  for (const auto& [deployment, c] : snapshot) {
    try {
      const auto dir = options_.dir / deployment;
      std::filesystem::create_directories(dir);
      write_file_atomic(dir / (options_.replica + ".json"), to_json(c).dump());
    } catch (const std::exception& e) {
      if (log_allowed("rollout figures " + deployment, std::chrono::seconds(60))) {
        spdlog::warn("deployment {}: cannot write this replica's rollout figures: {}", deployment, e.what());
      }
    }
  }
}

std::optional<PhaseCounters> RolloutServing::counters(const std::string& deployment) const {
  std::lock_guard lock(mutex_);
  auto it = counters_.find(deployment);
  if (it == counters_.end()) return std::nullopt;
  return it->second;
}

}  // namespace mlswarm
