#include "controller_api.h"

#include "deployments.h"
#include "rollout_serving.h"

#include <thread>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "embedded_files.h"
#include "mlswarm/image_decode.h"
#include "inference_v2.h"
#include "mlswarm/build_info.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/job_metrics.h"
#include "predict_input.h"
#include "searcher.h"

namespace mlswarm {

using nlohmann::json;

namespace {

json trainer_json(const TrainerView& t) {
  return {{"address", t.address},
          {"capacity", t.capacity},
          {"running", t.running},
          {"queued", t.queued},
          {"last_seen", t.last_seen},
          {"misses", t.misses},
          {"trusted", t.trusted},
          {"suspect", t.suspect},
          {"draining", t.draining},
          {"state", !t.trusted   ? "untrusted"
                    : t.draining ? "draining"
                    : t.suspect  ? "suspect"
                                 : "ready"}};
}

}  // namespace

namespace {

void describe_serving_metrics(Metrics& m) {
  m.describe("mlswarm_model_loads_total", "counter", "model versions loaded for serving");
  m.describe("mlswarm_model_unloads_total", "counter", "model versions unloaded for SERVE_MEMORY_MB");
  m.describe("mlswarm_serve_loaded_versions", "gauge", "model versions loaded for serving now");
  m.describe("mlswarm_serve_loaded_bytes", "gauge", "the weights of the model versions loaded now");
  m.describe("mlswarm_predict_forward_passes_total", "counter", "forward passes run for /predict and /classify");
  m.describe("mlswarm_predict_examples_total", "counter", "examples classified");
  m.describe("mlswarm_predict_queued", "gauge", "predictions waiting for a forward pass");
  m.describe("mlswarm_predict_p99_target_seconds", "gauge",
             "PREDICT_P99_TARGET_MS: the p99 of time in the batcher each model is tuned to");
  m.describe("mlswarm_predict_batch_cap", "gauge", "the most examples the batcher now puts in one pass, by model");
  m.describe("mlswarm_predict_wait_seconds", "gauge",
             "how long a pass's first request now waits for company, by model");
  m.describe("mlswarm_predict_p99_seconds", "gauge",
             "the p99 of time in the batcher (queued and its pass), by model, over its last tuning window");
  m.describe("mlswarm_predict_mean_batch", "gauge", "examples per pass, by model, over its last tuning window");
}

void collect_serving_metrics(Metrics& metrics, const ModelServer& models) {
  ModelServer::Stats serving = models.stats();
  metrics.set("mlswarm_model_loads_total", {}, static_cast<double>(serving.loads));
  metrics.set("mlswarm_model_unloads_total", {}, static_cast<double>(serving.unloads));
  metrics.set("mlswarm_serve_loaded_versions", {}, static_cast<double>(serving.loaded));
  metrics.set("mlswarm_serve_loaded_bytes", {}, static_cast<double>(serving.bytes));
  metrics.set("mlswarm_predict_forward_passes_total", {}, static_cast<double>(serving.batches));
  metrics.set("mlswarm_predict_examples_total", {}, static_cast<double>(serving.examples));
  metrics.set("mlswarm_predict_queued", {}, static_cast<double>(models.queued()));
  metrics.set("mlswarm_predict_p99_target_seconds", {}, static_cast<double>(models.p99_target().count()) / 1e6);
  for (const auto& t : models.tuning()) {
    const MetricLabels labels{{"model", t.model_id}};
    metrics.set("mlswarm_predict_batch_cap", labels, t.batch);
    metrics.set("mlswarm_predict_wait_seconds", labels, static_cast<double>(t.wait.count()) / 1e6);
    metrics.set("mlswarm_predict_p99_seconds", labels, static_cast<double>(t.p99.count()) / 1e6);
    metrics.set("mlswarm_predict_mean_batch", labels, t.mean_batch);
  }
}

}  // namespace

ControllerApi::ControllerApi(Cluster& cluster, JobRegistry& registry, ModelServer& models, DatasetCache& datasets,
                             ControllerApiOptions options, ReplicaHooks replicas, SweepSearcher* sweeps,
                             RolloutHooks rollouts)
    : cluster_(cluster),
      registry_(registry),
      models_(models),
      datasets_(datasets),
      options_(std::move(options)),
      replicas_(std::move(replicas)),
      sweeps_(sweeps),
      rollouts_(rollouts),
      decodes_(std::make_unique<std::counting_semaphore<>>(
          options_.max_decodes > 0 ? options_.max_decodes
                                   : std::max<std::ptrdiff_t>(1, std::thread::hardware_concurrency()))) {
  add_cluster_routes();
  add_serving_routes();
  add_dashboard_routes();
  add_inference_routes();
  if (sweeps_ != nullptr) add_sweep_routes();
  if (rollouts_.store != nullptr) add_deployment_routes();
  Metrics& m = Metrics::global();
  m.describe("mlswarm_trainers", "gauge", "trainers discovered");
  describe_serving_metrics(m);
  if (sweeps_ != nullptr) m.describe("mlswarm_sweeps", "gauge", "hyper-parameter sweeps by state");
  if (rollouts_.store != nullptr) {
    m.describe("mlswarm_served_requests_total", "counter",
               "requests to a served name, by name and by what answered: stable or candidate, and shadow for the "
               "candidate's second opinions in a shadow phase");
    m.describe("mlswarm_rollout_weight", "gauge", "the share of a name's requests its rollout's candidate answers");
    m.describe("mlswarm_shadow_dropped_total", "counter",
               "second opinions this replica dropped because their queue was full");
  }
  collector_ = m.add_collector([this](Metrics& metrics) {
    if (rollouts_.store != nullptr) {
      metrics.reset("mlswarm_rollout_weight");
      for (const auto& d : rollouts_.store->list()) {
        const int weight = d.rollout && !rollout_ended(d.rollout->state) ? d.rollout->weight() : 0;
        metrics.set("mlswarm_rollout_weight", {{"name", d.name}}, weight);
      }
    }
    if (sweeps_ != nullptr) {
      for (const auto& [state, n] : sweeps_->count_by_state()) {
        metrics.set("mlswarm_sweeps", {{"state", state}}, static_cast<double>(n));
      }
    }
    set_job_gauges(metrics, registry_.list());
    metrics.set("mlswarm_trainers", {}, static_cast<double>(cluster_.trainers().size()));
    collect_serving_metrics(metrics, models_);
  });
}

HttpReply ControllerApi::finish_error(const HttpRequest& request, HttpReply reply) {
  if (request.path == "/v2" || request.path.rfind("/v2/", 0) == 0) return v2::reshape_error(std::move(reply));
  return reply;
}

ControllerApi::~ControllerApi() { Metrics::global().remove_collector(collector_); }

void ControllerApi::check_access(const HttpRequest& head, const Route* route) {
  // Without a route nothing is said about what exists to a caller without the token.
  const Access access = route != nullptr ? route->access : Access::kWrite;
  if (access == Access::kWrite || (access == Access::kRead && !options_.public_reads)) {
    require_token(head, options_.api_token, "API token");
  }
}

namespace {

/// Each model's tuning as /status and the dashboard show it.
json tuning_json(const std::vector<ModelTuning>& tuning) {
  json out = json::array();
  for (const auto& t : tuning) {
    out.push_back(
        {{"model_id", t.model_id},
         {"batch_cap", t.batch},
         {"wait_us", t.wait.count()},
         // null until a first window is judged
         {"p99_ms", t.window_requests > 0 ? json(static_cast<double>(t.p99.count()) / 1e3) : json()},
         {"pass_p99_ms", t.window_requests > 0 ? json(static_cast<double>(t.pass_p99.count()) / 1e3) : json()},
         {"mean_batch", t.mean_batch},
         {"requests", t.requests}});
  }
  return out;
}

}  // namespace

HttpReply ControllerApi::status() const {
  json trainers = json::array();
  for (const auto& t : cluster_.trainers()) trainers.push_back(trainer_json(t));
  json jobs = json::array();
  const double now = unix_now();
  for (const auto& job : registry_.list()) jobs.push_back(to_json(job, now));
  ModelServer::Stats serving = models_.stats();
  json out = {{"trainers", std::move(trainers)},
              {"discovery_passes", cluster_.scans_completed()},
              {"jobs", std::move(jobs)},
              {"serving",
               {{"model_loads", serving.loads},
                {"model_unloads", serving.unloads},
                {"loaded_versions", serving.loaded},
                {"loaded_bytes", serving.bytes},
                {"forward_passes", serving.batches},
                {"requests", serving.requests},
                {"examples", serving.examples},
                {"queued", models_.queued()},
                {"p99_target_ms", static_cast<double>(models_.p99_target().count()) / 1e3},
                {"models", tuning_json(models_.tuning())}}}};
  if (replicas_.describe) out["controller"] = replicas_.describe();
  return HttpReply::json(200, out);
}

std::optional<HttpReply> ControllerApi::forwarded(const HttpRequest& request) const {
  if (!replicas_.forward_to_leader) return std::nullopt;
  return replicas_.forward_to_leader(request);
}

}  // namespace mlswarm
