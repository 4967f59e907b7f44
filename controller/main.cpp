// ml_controller: discovers trainers, dispatches jobs to them, keeps every job, and serves
// predictions from the models trainers write to HOME_DIR.

#include <filesystem>
#include <thread>
#include <variant>

#include <spdlog/spdlog.h>

#include "cluster.h"
#include "controller_api.h"
#include "controller_config.h"
#include "job_registry.h"
#include "mlswarm/allocator.h"
#include "mlswarm/torch/mapped_tensors.h"
#include "mlswarm/daemon.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/error.h"
#include "mlswarm/http_client.h"
#include "mlswarm/http_server.h"
#include "mlswarm/log.h"
#include "mlswarm/version.h"
#include "deployments.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/model_meta.h"
#include "model_server.h"
#include "rollout_runner.h"
#include "rollout_serving.h"
#include "replicas.h"
#include "searcher.h"
#include "leadership.h"
#include "trainer_transport.h"

namespace mlswarm {
namespace {

ClusterOptions cluster_options(const ControllerConfig& c) {
  ClusterOptions o;
  o.subnet = c.subnet;
  o.dns_name = c.dns_name;
  o.scan.port = c.train_port;
  o.scan.cluster_key = c.cluster_token;
  o.scan_interval = std::chrono::milliseconds(c.scan_interval_ms);
  o.max_misses = c.max_misses;
  o.planner.max_attempts = c.max_attempts;
  o.planner.rendezvous_port = c.rendezvous_port;
  o.max_queued = static_cast<std::size_t>(c.max_queued_jobs);
  o.home_dir = c.home_dir;
  return o;
}

HttpServerOptions http_options(const ControllerConfig& c) {
  HttpServerOptions http = c.http.apply({});
  http.max_body_bytes = std::max(c.max_body, kMaxSpecBytes);
  http.tls_cert_file = c.tls_cert_file;
  http.tls_key_file = c.tls_key_file;
  return http;
}

TrainerCallOptions call_options(const ControllerConfig& c) {
  TrainerCallOptions o;
  o.timeout = std::chrono::milliseconds(c.trainer_timeout_ms);
  o.connect_timeout = std::chrono::milliseconds(std::max(200, c.trainer_timeout_ms / 10));
  o.cluster_key = c.cluster_token;
  return o;
}

/// Keeps a version a served name pins from being pruned: a marker in its folder (written
/// before the record that pins it).
void pin_version(const std::string& home_dir, const ModelRef& m) {
  const auto dir = model_version_dir(home_dir, m.model_id, m.version);
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return;  // no such version kept: nothing to keep
  if (!std::filesystem::exists(dir / kPinnedMarker, ec)) write_file_atomic(dir / kPinnedMarker, "");
}

/// Jobs (not sweep trials) and sweeps that succeeded with a `deploy`, for the rollout runner.
std::vector<DeployRequest> pending_deploys(const JobRegistry& registry) {
  std::vector<DeployRequest> out;
  for (const JobRecord& job : registry.list()) {
    if (job.state != JobState::kSucceeded || job.spec.deploy.is_null() || !job.spec.sweep_id.empty()) continue;
    out.push_back({"job/" + job.spec.job_id, job.spec.deploy.value("name", ""), job.spec.model_id, job.spec.deploy});
  }
  for (const nlohmann::json& sweep : registry.documents("sweep")) {
    const nlohmann::json deploy = sweep.value("spec", nlohmann::json::object()).value("deploy", nlohmann::json());
    if (deploy.is_null() || sweep.value("state", "") != "succeeded" || !sweep.value("published", false)) continue;
    const std::string id = sweep["spec"].value("sweep_id", "");
    out.push_back({"sweep/" + id, deploy.value("name", ""), id, deploy});
  }
  return out;
}

/// Served names and rollouts: the deployments in the journal, this replica's serving through
/// names, and the leader's runner (ticked by the cluster loop).
struct Rollouts {
  Rollouts(const ControllerConfig& c, JobRegistry& registry, ModelServer& models, DatasetCache& datasets,
           const std::string& address)
      : store(
            registry,
            [&models](const ModelRef& m) {
              return ModelRef{m.model_id, models.meta(m.model_id, m.version).version};
            },
            [home = c.home_dir](const ModelRef& m) { pin_version(home, m); }),
        serving(store, models, {dir_of(c), replica_file_name(address)}),
        runner(
            store, dir_of(c),
            [&models, &datasets](const ModelRef& stable, const ModelRef& candidate,
                                 const std::optional<std::pair<std::int64_t, std::int64_t>>& idxs) {
              return evaluate_held_out(models, datasets, stable, candidate, idxs);
            },
            {}, [&registry] { return pending_deploys(registry); }) {}
  static std::filesystem::path dir_of(const ControllerConfig& c) {
    return std::filesystem::path(c.home_dir) / "controller" / "rollouts";
  }

  DeploymentStore store;
  RolloutServing serving;
  RolloutRunner runner;
};

/// What a replica warms before /readyz: the versions its deployments serve (stable and a rollout's
/// candidate) and SERVE_PRELOAD's models (their latest).
std::vector<std::pair<std::string, int>> models_to_warm(const ControllerConfig& c, const DeploymentStore& store) {
  std::vector<std::pair<std::string, int>> out;
  for (const auto& d : store.list()) {
    auto target = store.target(d.name);
    if (!target) continue;
    out.emplace_back(target->stable.model_id, target->stable.version);
    if (target->candidate) out.emplace_back(target->candidate->model_id, target->candidate->version);
  }
  for (const std::string& id : c.serve_preload) out.emplace_back(id, 0);
  return out;
}

BatchingOptions batching_options(const ControllerConfig& c) {
  return {c.predict_max_batch,
          std::chrono::microseconds(c.predict_max_delay_us),  // -1: the batcher's automatic bound
          c.predict_threads,
          c.serve_device,
          c.predict_workers,
          std::chrono::milliseconds(c.predict_p99_target_ms)};
}

/// The replicas' hooks, with /readyz also waiting for the models to warm.
ReplicaHooks with_warm_models(ReplicaHooks hooks, const ModelServer& models) {
  hooks.not_ready = [&models, replicas = hooks.not_ready]() -> std::optional<std::string> {
    if (auto why = models.not_ready()) return why;
    return replicas ? replicas() : std::nullopt;
  };
  return hooks;
}

/// Serves until SIGTERM; returns the exit code.
int run_controller(const ControllerConfig& c) {
  const std::string allocator = tune_allocator_for_tensors();  // batched forward passes (docs/benchmarks.md)
  install_mapped_tensors();  // before any thread uses tensors: a loaded model's weights (ModelCache)
  const std::string address = advertised_address(c.advertise, c.host, c.port, c.subnet);
  Leadership leadership({std::filesystem::path(c.home_dir) / "controller", address,
                         std::chrono::milliseconds(c.lease_ms),
                         std::chrono::milliseconds(std::max(100, c.lease_ms / 8))});
  JobRegistry registry(std::filesystem::path(c.home_dir) / "controller", false);
  HttpTrainerTransport transport(call_options(c));
  ClusterOptions options = cluster_options(c);
  options.may_act = [&leadership] { return leadership.can_lead(leadership.view().term); };
  Cluster cluster(registry, transport, std::move(options));
  SweepSearcher sweeps(registry, c.home_dir,
                       {[&cluster](JobSpec spec) { cluster.submit(std::move(spec)); },
                        [&cluster](const std::string& job_id) { cluster.cancel(job_id); },
                        [&cluster, &registry] { return free_trainer_slots(cluster.trainers(), registry.list()); }},
                       SearcherOptions{c.max_live_sweeps, c.max_sweep_trials});
  Replicas replicas(leadership, registry, cluster,
                    {address, std::chrono::milliseconds(10000), !c.tls_cert_file.empty()});
  ModelServer models(c.home_dir, batching_options(c), static_cast<std::size_t>(c.serve_memory_mb) << 20);
  DatasetCache datasets(c.data_dir, c.home_dir, static_cast<std::size_t>(c.dataset_cache_mb) << 20);
  Rollouts rollouts(c, registry, models, datasets, address);
  models.preload(models_to_warm(c, rollouts.store));
  cluster.set_before_plan([&sweeps, &rollouts] {
    sweeps.tick();
    rollouts.runner.tick();
  });
  ControllerApi api(
      cluster, registry, models, datasets,
      ControllerApiOptions{c.home_dir, static_cast<std::size_t>(c.predict_max_examples), c.max_body, c.api_token,
                           c.public_reads, models.max_batch(), models.max_delay_us(), c.max_image_pixels, c.max_decodes,
                           static_cast<std::size_t>(c.predict_max_values)},
      with_warm_models(replicas.hooks(), models), &sweeps,
      RolloutHooks{&rollouts.store, &rollouts.serving, &rollouts.runner});
  HttpService service = api.service();
  service.handle = [&api, &replicas](const HttpRequest& request) {
    HttpReply reply = api.serve(request);
    if (replicas.draining()) reply.headers["Connection"] = "close";
    return reply;
  };
  HttpServer server(std::move(service), http_options(c));
  server.bind(c.host, c.port);
  replicas.start();
  spdlog::info(
      "ml_controller listening on {}://{}:{} as {}; trainers in {}{} on port {}; HOME_DIR {}; API {}{}; "
      "cluster key {}; {}",
      c.tls_cert_file.empty() ? "http" : "https", c.host, c.port, address, c.subnet ? c.subnet->to_string() : "-",
      c.dns_name.empty() ? "" : " and at " + c.dns_name, c.train_port, c.home_dir,
      c.api_token.empty() ? "open" : "needs a bearer token",
      !c.api_token.empty() && c.public_reads ? " (reads public)" : "",
      c.cluster_token.empty() ? "off" : "on (signed calls, trainers must prove it)", allocator);
  serve_until_stop_signal(server, [&] {
    replicas.drain();
    std::this_thread::sleep_for(std::chrono::milliseconds(c.drain_ms));  // the drain itself
    replicas.stop();
  });
  replicas.stop();
  spdlog::info("ml_controller stopped");
  return 0;
}

}  // namespace
}  // namespace mlswarm

int main(int argc, char** argv) {
  using namespace mlswarm;
  auto parsed = parse_controller_config(argc, argv, [] { return version_text("ml_controller"); });
  if (auto* exit = std::get_if<cli::ParseExit>(&parsed)) return cli::finish(*exit);
  const ControllerConfig& config = std::get<ControllerConfig>(parsed);
  const OneShotCommand one_shot{config.fetch_url, config.api_token, config.healthcheck, config.port,
                                !config.tls_cert_file.empty()};
  if (auto code = run_one_shot(one_shot)) return *code;
  catch_stop_signals();
  init_logging(config.log_level, config.log_format, "ml_controller");
  try {
    return run_controller(config);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
