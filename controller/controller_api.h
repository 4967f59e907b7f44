#pragma once

#include <filesystem>
#include <string>

#include "cluster.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/http.h"
#include "model_server.h"

namespace mlswarm {

struct ControllerApiOptions {
  std::filesystem::path home_dir;
  std::size_t max_examples = 1024;  ///< per /predict request and per examples page
  /// The bearer token clients must send (API_TOKEN_FILE); empty = open. /type, /healthz and
  /// /readyz are always open; everything that changes state or costs compute (/train,
  /// DELETE /jobs/{id}, /predict, /classify) always needs it when set.
  std::string api_token;
  /// Whether the read-only routes (/status, /jobs, /models, /datasets, /metrics) stay open
  /// when a token is set (PUBLIC_READS); by default they need the token too.
  bool public_reads = false;
};

/// How a route is guarded: open to all, read-only (token unless public_reads), or a write
/// or compute route (token whenever one is set).
enum class RouteAccess { kOpen, kRead, kWrite };
RouteAccess controller_route_access(const std::string& method, const std::string& path);

/// The controller's HTTP routes as a plain function from request to reply (no socket).
/// None of the collaborators is owned; all must outlive the API. Thread-safe as they are.
class ControllerApi {
 public:
  ControllerApi(Cluster& cluster, JobRegistry& registry, ModelServer& models, DatasetCache& datasets,
                ControllerApiOptions options);
  ~ControllerApi();
  ControllerApi(const ControllerApi&) = delete;
  ControllerApi& operator=(const ControllerApi&) = delete;

  HttpReply handle(const HttpRequest& request);

 private:
  HttpReply route(const HttpRequest& request);
  HttpReply status() const;
  HttpReply list_models() const;
  HttpReply model(const std::string& model_id);
  HttpReply datasets() const;
  HttpReply dataset(const std::string& name) const;
  HttpReply examples(const std::string& name, const HttpRequest& request);
  HttpReply predict(const HttpRequest& request);
  HttpReply classify(const HttpRequest& request);

  Cluster& cluster_;
  JobRegistry& registry_;
  ModelServer& models_;
  DatasetCache& datasets_;
  ControllerApiOptions options_;
  int collector_ = 0;  ///< this API's /metrics collector in Metrics::global()
};

}  // namespace mlswarm
