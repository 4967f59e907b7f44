#include "rollout_runner.h"

#include <chrono>
#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/dataset_cache.h"
#include "mlswarm/error.h"
#include "mlswarm/log.h"
#include "mlswarm/metrics.h"

namespace mlswarm {

using nlohmann::json;

namespace {

double wall_clock() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Which gate a rollback was for, as a bounded /metrics label.
std::string rollback_reason(const RolloutDecision& d) {
  for (const auto& g : d.gates) {
    if (!g.passed) return g.gate.rfind("class_recall_drop", 0) == 0 ? "class_recall_drop" : g.gate;
  }
  if (d.reason.find("min_requests") != std::string::npos) return "too_few_requests";
  return "evaluation_failed";
}

/// Correct answers per class of `model` on `count` examples of `split` from `from`.
std::vector<std::int64_t> correct_per_class(ModelServer& models, const std::shared_ptr<const LoadedModel>& model,
                                            const DatasetSplit& split, std::int64_t from, std::int64_t to,
                                            std::size_t classes, std::size_t pixels_per_example) {
  std::vector<std::int64_t> correct(classes, 0);
  constexpr std::int64_t kChunk = 256;
  for (std::int64_t start = from; start < to; start += kChunk) {
    const std::int64_t n = std::min(kChunk, to - start);
    std::vector<float> pixels(static_cast<std::size_t>(n) * pixels_per_example);
    const std::uint8_t* bytes = split.images.data() + static_cast<std::size_t>(start) * pixels_per_example;
    for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(bytes[i]) / 255.0f;
    const PredictResult r = models.predict(model, std::move(pixels), n);
    for (std::int64_t i = 0; i < n; ++i) {
      const int label = split.labels[static_cast<std::size_t>(start + i)];
      if (r.class_idxs[static_cast<std::size_t>(i)] == label && static_cast<std::size_t>(label) < classes) {
        ++correct[static_cast<std::size_t>(label)];
      }
    }
  }
  return correct;
}

}  // namespace

EvaluationFigures evaluate_held_out(ModelServer& models, DatasetCache& datasets, const ModelRef& stable,
                                    const ModelRef& candidate,
                                    const std::optional<std::pair<std::int64_t, std::int64_t>>& idxs) {
  auto stable_model = models.model(stable.model_id, stable.version);
  auto candidate_model = models.model(candidate.model_id, candidate.version);
  const ModelMeta& a = ModelServer::meta_of(*stable_model);
  const ModelMeta& b = ModelServer::meta_of(*candidate_model);
  if (a.dataset != b.dataset || a.class_names != b.class_names || a.channels != b.channels || a.height != b.height ||
      a.width != b.width) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("the candidate ({} on {}, {} classes) does not classify what the stable does ({} on {}, {} "
                            "classes)",
                            b.model_id, b.dataset, b.class_names.size(), a.model_id, a.dataset, a.class_names.size()));
  }
  const auto data = datasets.get(a.dataset);
  const DatasetSplit& test = data->test;
  const std::int64_t from = idxs ? std::min(idxs->first, test.count) : 0;
  const std::int64_t to = idxs ? std::min(idxs->second, test.count) : test.count;
  if (to <= from)
    throw Error(ErrorCode::kInvalidArgument, "eval_idxs selects no example of the test split", "eval_idxs");
  const std::size_t per_example = static_cast<std::size_t>(a.channels) * a.height * a.width;
  const std::size_t classes = a.class_names.size();
  const auto stable_correct = correct_per_class(models, stable_model, test, from, to, classes, per_example);
  const auto candidate_correct = correct_per_class(models, candidate_model, test, from, to, classes, per_example);
  std::vector<std::int64_t> per_class(classes, 0);
  for (std::int64_t i = from; i < to; ++i) {
    const std::size_t label = test.labels[static_cast<std::size_t>(i)];
    if (label < classes) ++per_class[label];
  }
  EvaluationFigures f;
  f.examples = to - from;
  f.classes = a.class_names;
  std::int64_t stable_total = 0, candidate_total = 0;
  for (std::size_t c = 0; c < classes; ++c) {
    stable_total += stable_correct[c];
    candidate_total += candidate_correct[c];
    const double n = static_cast<double>(std::max<std::int64_t>(1, per_class[c]));
    f.stable_recall.push_back(static_cast<double>(stable_correct[c]) / n);
    f.candidate_recall.push_back(static_cast<double>(candidate_correct[c]) / n);
  }
  f.stable_accuracy = static_cast<double>(stable_total) / static_cast<double>(f.examples);
  f.candidate_accuracy = static_cast<double>(candidate_total) / static_cast<double>(f.examples);
  return f;
}

RolloutRunner::RolloutRunner(DeploymentStore& store, std::filesystem::path dir, Evaluate evaluate,
                             std::function<double()> now, PendingDeploys pending)
    : store_(store),
      dir_(std::move(dir)),
      evaluate_(std::move(evaluate)),
      now_(now ? std::move(now) : wall_clock),
      pending_(std::move(pending)) {
  Metrics::global().describe("mlswarm_rollbacks_total", "counter", "rollouts rolled back, by the gate that failed");
  Metrics::global().describe("mlswarm_rollouts_total", "counter", "rollouts that ended, by how");
}

RolloutRunner::~RolloutRunner() {
  if (evaluator_.joinable()) evaluator_.join();
}

TrafficFigures RolloutRunner::figures(const std::string& name, const std::string& phase) const {
  std::vector<PhaseCounters> replicas;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / name, ec)) {
    if (entry.path().extension() != ".json" || entry.is_symlink(ec)) continue;
    try {
      std::ifstream in(entry.path());
      PhaseCounters c = phase_counters_from_json(json::parse(in));
      if (c.phase == phase) replicas.push_back(std::move(c));
    } catch (const std::exception& e) {
      if (log_allowed("rollout figures " + entry.path().string(), std::chrono::seconds(60))) {
        spdlog::warn("deployment {}: skipped the figures in {}: {}", name, entry.path().string(), e.what());
      }
    }
  }
  return sum_figures(replicas);
}

std::optional<RolloutRunner::Outcome> RolloutRunner::evaluation(const std::string& key, const RolloutRecord& r) {
  std::lock_guard lock(mutex_);
  if (auto it = outcomes_.find(key); it != outcomes_.end()) return it->second;
  if (!running_.empty()) return std::nullopt;  // one at a time
  if (evaluator_.joinable()) evaluator_.join();
  running_ = key;
  evaluator_ = std::jthread([this, key, stable = r.stable, candidate = r.spec.candidate, idxs = r.spec.eval_idxs] {
    Outcome outcome;
    try {
      outcome.figures = evaluate_(stable, candidate, idxs);
    } catch (const std::exception& e) {
      outcome.error = e.what();
    }
    std::lock_guard done(mutex_);
    outcomes_[key] = std::move(outcome);
    running_.clear();
  });
  return std::nullopt;
}

void RolloutRunner::advance(const Deployment& d) {
  const RolloutRecord& r = *d.rollout;
  const double now = now_();
  std::optional<EvaluationFigures> evaluated;
  RolloutDecision decision;
  if (r.state == RolloutState::kEvaluating) {
    const auto outcome = evaluation(fmt::format("{}@{:.3f}", d.name, r.started_at), r);
    if (!outcome) return;
    if (!outcome->error.empty()) {
      decision.kind = RolloutDecision::Kind::kRollBack;
      decision.reason = "the evaluation failed: " + outcome->error;
    } else {
      evaluated = outcome->figures;
    }
  }
  if (decision.kind == RolloutDecision::Kind::kWait) {
    decision = decide(r, evaluated,
                      r.state == RolloutState::kEvaluating ? TrafficFigures{} : figures(d.name, rollout_phase(r)), now);
  }
  if (decision.kind == RolloutDecision::Kind::kWait) return;
  auto after = store_.decide(d.name, r.history.size(), decision, now);
  if (!after) return;  // it moved on meanwhile (aborted): nothing of this decision happened
  const RolloutRecord& next = *after->rollout;
  if (next.state == RolloutState::kRolledBack) {
    Metrics::global().inc("mlswarm_rollbacks_total", {{"reason", rollback_reason(decision)}});
    spdlog::error("deployment {}: rollout of model {} version {} rolled back: {}", d.name, r.spec.candidate.model_id,
                  r.spec.candidate.version, decision.reason);
  } else {
    spdlog::info("deployment {}: rollout of model {} version {}: {}, weight {}: {}", d.name, r.spec.candidate.model_id,
                 r.spec.candidate.version, to_string(next.state), next.weight(), decision.reason);
  }
  if (rollout_ended(next.state))
    Metrics::global().inc("mlswarm_rollouts_total", {{"outcome", std::string(to_string(next.state))}});
}

void RolloutRunner::deploy(const DeployRequest& request, double now) {
  if (store_.claimed(request.key)) return;  // done already, by this leader or an earlier one
  const std::optional<Deployment> d = store_.find(request.name);
  // A rollout under way on the name: this one waits for it to end (claimed, it would be lost
  // to the 409).
  if (d && d->rollout && !rollout_ended(d->rollout->state)) {
    if (log_allowed("deploy waits " + request.key, std::chrono::seconds(60))) {
      spdlog::info("{}: its model {} waits for the rollout under way on deployment {} to end", request.key,
                   request.model_id, request.name);
    }
    return;
  }
  if (!store_.claim_once(request.key, now)) return;
  try {
    if (d) {
      store_.start_rollout(request.name, deploy_rollout_spec(request.deploy, request.model_id), now);
    } else {
      store_.put(request.name, {request.model_id, 0}, now);
    }
  } catch (const std::exception& e) {
    spdlog::error("{}: its model {} was not put on deployment {}: {}", request.key, request.model_id, request.name,
                  e.what());
  }
}

void RolloutRunner::tick() {
  if (pending_) {
    for (const DeployRequest& request : pending_()) {
      try {
        deploy(request, now_());
      } catch (const std::exception& e) {
        spdlog::warn("{}: deploy: {} (the next pass tries again)", request.key, e.what());
      }
    }
  }
  for (const Deployment& d : store_.list()) {
    if (!d.rollout || rollout_ended(d.rollout->state)) continue;
    try {
      advance(d);
    } catch (const std::exception& e) {
      if (const std::size_t n = log_due("rollout " + d.name, std::chrono::seconds(60))) {
        spdlog::warn("deployment {}: {} (the next pass tries again){}", d.name, e.what(),
                     repeats(n, std::chrono::seconds(60)));
      }
    }
  }
}

}  // namespace mlswarm
