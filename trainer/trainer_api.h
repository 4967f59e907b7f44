#pragma once

#include <string>

#include "job_runner.h"
#include "mlswarm/http.h"
#include "status_board.h"

namespace mlswarm {

/// The trainer's HTTP routes as a plain function from request to reply (no socket):
/// GET /type, /healthz, /status, /jobs, /jobs/{id}, /metrics; POST /train; DELETE /jobs/{id}.
/// Thread-safe as far as JobRunner and StatusBoard are; neither is owned.
/// With a `cluster_token` (CLUSTER_TOKEN_FILE), every method but GET needs it as a bearer
/// token: only the controller may start or cancel jobs. GETs stay open for discovery and
/// for operators debugging with curl.
class TrainerApi {
 public:
  TrainerApi(JobRunner& runner, StatusBoard& board, std::string address, std::string cluster_token = {});
  ~TrainerApi();
  TrainerApi(const TrainerApi&) = delete;
  TrainerApi& operator=(const TrainerApi&) = delete;

  HttpReply handle(const HttpRequest& request);

 private:
  HttpReply status() const;
  HttpReply train(const HttpRequest& request);
  HttpReply job(const std::string& job_id) const;

  JobRunner& runner_;
  StatusBoard& board_;
  std::string address_;
  std::string cluster_token_;
  int collector_ = 0;  ///< this API's /metrics collector in Metrics::global()
};

}  // namespace mlswarm
