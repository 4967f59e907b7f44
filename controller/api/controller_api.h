#pragma once

#include <memory>
#include <semaphore>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "cluster.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/http.h"
#include "mlswarm/http_server.h"
#include "mlswarm/routes.h"
#include "model_server.h"

namespace mlswarm {

class SweepSearcher;
class DeploymentStore;
class RolloutServing;
class RolloutRunner;

/// Served names and rollouts (each may be null: a controller without them serves model ids).
struct RolloutHooks {
  DeploymentStore* store = nullptr;   ///< /deployments
  RolloutServing* serving = nullptr;  ///< names on the serving routes, splits, second opinions
  RolloutRunner* runner = nullptr;    ///< the live figures of a rollout's phase, for its view
};

struct ControllerApiOptions {
  std::filesystem::path home_dir;
  std::size_t max_examples = 1024;           ///< per /predict request and per examples page
  std::size_t max_upload_bytes = 64u << 20;  ///< the body cap of /predict and /classify (MAX_BODY)
  /// The bearer token clients must send (API_TOKEN_FILE); empty = open. /type, /healthz and
  /// /readyz are always open; everything that changes state or costs compute (/train,
  /// DELETE /jobs/{id}, /predict, /classify) always needs it when set.
  std::string api_token;
  /// Whether the read-only routes (/status, /jobs, /models, /datasets, /metrics) stay open
  /// when a token is set (PUBLIC_READS); by default they need the token too.
  bool public_reads = false;
  /// What GET /v2/models/{m}/config reports of the batcher (PREDICT_MAX_BATCH, PREDICT_MAX_DELAY_US).
  int max_batch = 8;
  int max_delay_us = 0;
  /// /classify: the largest declared pixel area decoded (MAX_IMAGE_PIXELS), and how many
  /// images decode at once (MAX_DECODES; 0 = one per core); others wait their turn.
  std::int64_t max_image_pixels = 2048 * 2048;
  int max_decodes = 0;
  /// Values (numbers, mostly) in one /predict or v2 JSON body, counted while parsing
  /// (PREDICT_MAX_VALUES): a body of millions of tiny numbers is refused at this count.
  std::size_t max_values = std::size_t{1} << 22;
};

/// How the API fits among controller replicas (see Replicas in replicas/replicas.h); each part may be
/// empty, as for a controller without replicas.
struct ReplicaHooks {
  /// POST /train and DELETE /jobs/{id}: the leader's reply when this controller does not lead
  /// (the request forwarded with the client's token and request id); nullopt: handle it here.
  std::function<std::optional<HttpReply>(const HttpRequest&)> forward_to_leader;
  /// {"address", "role", "leader", "term"} for /status.
  std::function<nlohmann::json()> describe;
  /// /readyz: why this replica should get no traffic (draining, not leading and not
  /// following), or nullopt to decide as a lone controller does.
  std::function<std::optional<std::string>()> not_ready;
  /// Whether this replica follows a leader: then /readyz is ready as soon as it can serve.
  std::function<bool()> following;
};

/// The body cap of POST /train: a job spec is a few hundred bytes.
inline constexpr std::size_t kMaxSpecBytes = 64u << 10;

/// The controller's HTTP routes (one RouteTable: method, path, access, body cap, handler) as
/// plain functions from request to reply (no socket). None of the collaborators is owned;
/// all must outlive the API. Thread-safe as they are.
class ControllerApi final : public RoutedApi {
 public:
  ControllerApi(Cluster& cluster, JobRegistry& registry, ModelServer& models, DatasetCache& datasets,
                ControllerApiOptions options, ReplicaHooks replicas = {}, SweepSearcher* sweeps = nullptr,
                RolloutHooks rollouts = {});
  ~ControllerApi() override;
  ControllerApi(const ControllerApi&) = delete;
  ControllerApi& operator=(const ControllerApi&) = delete;

 private:
  /// Open routes need nothing; read routes the API token unless PUBLIC_READS; write routes,
  /// and requests without a route, the API token whenever one is set.
  void check_access(const HttpRequest& head, const Route* route) override;
  /// The probes, /status, /metrics, /train and /jobs.
  void add_cluster_routes();
  /// /models, /datasets, /predict and /classify.
  void add_serving_routes();
  /// The dashboard: GET / and its files under /ui/, open (the page holds no data; it asks for
  /// the token), and /ui/config.json (whether a token is needed, the version).
  void add_dashboard_routes();
  /// The Open Inference Protocol (KServe v2): /v2, health, model metadata, ready, config, infer.
  void add_inference_routes();
  /// /sweeps (when the API has a searcher): create, list, show, cancel.
  void add_sweep_routes();
  /// /deployments (when the API has a deployment store): pin, list, show, remove, roll out, abort.
  void add_deployment_routes();
  /// A deployment's view: the record, and a live rollout's figures of its current phase.
  nlohmann::json deployment_view(const std::string& name) const;
  /// What answers a serving request for `name` (a model id, or a deployment's name).
  struct Served;
  Served served_by(const std::string& name, int version, const HttpRequest& request);
  /// Classifies with what `served` chose, timed, its figures recorded for the rollout.
  PredictResult classify_with(Served& served, std::vector<float> pixels, std::int64_t count);
  HttpReply infer(const std::string& model_id, int version, const HttpRequest& request);
  /// Errors on /v2 paths in the protocol's shape, {"error": "<message>"}.
  HttpReply finish_error(const HttpRequest& request, HttpReply reply) override;
  HttpReply status() const;
  /// The leader's reply to a write this replica does not handle itself.
  std::optional<HttpReply> forwarded(const HttpRequest& request) const;
  /// POST /train: Error(kConflict) when the job's id or model id belongs to a sweep.
  void refuse_sweep_ids(const JobSpec& spec) const;
  HttpReply list_models() const;
  HttpReply model(const std::string& model_id);
  HttpReply datasets() const;
  HttpReply dataset(const std::string& name) const;
  HttpReply register_dataset(const HttpRequest& request);
  HttpReply examples(const std::string& name, const HttpRequest& request);
  HttpReply predict(const HttpRequest& request);
  HttpReply classify(const HttpRequest& request);

  Cluster& cluster_;
  JobRegistry& registry_;
  ModelServer& models_;
  DatasetCache& datasets_;
  ControllerApiOptions options_;
  ReplicaHooks replicas_;
  SweepSearcher* sweeps_ = nullptr;                     ///< not owned
  RolloutHooks rollouts_;                               ///< none owned
  int collector_ = 0;                                   ///< this API's /metrics collector in Metrics::global()
  std::unique_ptr<std::counting_semaphore<>> decodes_;  ///< /classify's decodes at once
};

}  // namespace mlswarm
