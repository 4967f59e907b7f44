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
  m.describe("mlswarm_model_loads_total", "counter", "model versions loaded for serving");
  m.describe("mlswarm_predict_forward_passes_total", "counter", "forward passes run for /predict and /classify");
  m.describe("mlswarm_predict_examples_total", "counter", "examples classified");
  if (sweeps_ != nullptr) m.describe("mlswarm_sweeps", "gauge", "hyper-parameter sweeps by state");
  if (rollouts_.store != nullptr) {
    m.describe("mlswarm_served_requests_total", "counter",
               "requests to a served name, by name and by what answered (stable or candidate)");
    m.describe("mlswarm_rollout_weight", "gauge", "the share of a name's requests its rollout's candidate answers");
    m.describe("mlswarm_shadow_dropped_total", "gauge",
               "second opinions this replica dropped in the current phase (their queue was full)");
  }
  collector_ = m.add_collector([this](Metrics& metrics) {
    if (rollouts_.store != nullptr) {
      metrics.reset("mlswarm_rollout_weight");
      for (const auto& d : rollouts_.store->list()) {
        const int weight = d.rollout && !rollout_ended(d.rollout->state) ? d.rollout->weight() : 0;
        metrics.set("mlswarm_rollout_weight", {{"name", d.name}}, weight);
        if (rollouts_.serving == nullptr) continue;
        if (auto c = rollouts_.serving->counters(d.name)) {
          metrics.set("mlswarm_shadow_dropped_total", {{"name", d.name}}, static_cast<double>(c->shadow_dropped));
        }
      }
    }
    if (sweeps_ != nullptr) {
      for (const auto& [state, n] : sweeps_->count_by_state()) {
        metrics.set("mlswarm_sweeps", {{"state", state}}, static_cast<double>(n));
      }
    }
    set_job_gauges(metrics, registry_.list());
    metrics.set("mlswarm_trainers", {}, static_cast<double>(cluster_.trainers().size()));
    ModelServer::Stats serving = models_.stats();
    metrics.set("mlswarm_model_loads_total", {}, static_cast<double>(serving.loads));
    metrics.set("mlswarm_predict_forward_passes_total", {}, static_cast<double>(serving.batches));
    metrics.set("mlswarm_predict_examples_total", {}, static_cast<double>(serving.examples));
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
                {"forward_passes", serving.batches},
                {"requests", serving.requests},
                {"examples", serving.examples}}}};
  if (replicas_.describe) out["controller"] = replicas_.describe();
  return HttpReply::json(200, out);
}

std::optional<HttpReply> ControllerApi::forwarded(const HttpRequest& request) const {
  if (!replicas_.forward_to_leader) return std::nullopt;
  return replicas_.forward_to_leader(request);
}

}  // namespace mlswarm
