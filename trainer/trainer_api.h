#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>

#include "job_runner.h"
#include "mlswarm/http.h"
#include "mlswarm/http_server.h"
#include "mlswarm/routes.h"
#include "mlswarm/signing.h"
#include "status_board.h"

namespace mlswarm {

/// The trainer's HTTP routes (one RouteTable) as plain functions from request to reply (no
/// socket): GET /type, /healthz, /status, /jobs, /jobs/{id}, /metrics; POST /train;
/// DELETE /jobs/{id}[?attempt=N]. Thread-safe as far as JobRunner and StatusBoard are;
/// neither is owned.
/// With a cluster key (CLUSTER_TOKEN_FILE), POST and DELETE need a request signed with it
/// (only the controller makes those) and /type answers a discovery challenge with the proof
/// that this trainer holds the key. GETs stay open for discovery and for operators
/// debugging with curl.
class TrainerApi final : public RoutedApi {
 public:
  /// `advertised`: TRAIN_ADVERTISE_ADDRESS (RequestVerifier). `home_dir`: HOME_DIR, where a
  /// dispatch starts its attempt on the job's fence before it is taken (empty: no fence, for
  /// tests of the routes alone).
  TrainerApi(JobRunner& runner, StatusBoard& board, std::string address, std::string cluster_key = {},
             std::string advertised = {}, std::filesystem::path home_dir = {});
  ~TrainerApi() override;
  TrainerApi(const TrainerApi&) = delete;
  TrainerApi& operator=(const TrainerApi&) = delete;

  /// The trainer is shutting down: POST /train answers 503 and /status reports no capacity.
  void start_draining();
  /// Waits until a /status read that began after this call has been answered by the
  /// controller's poll (a signed one when there is a key), or `timeout` passes. Returns
  /// whether one was. On SIGTERM this lets the controller learn that the jobs were
  /// interrupted before the server stops.
  bool wait_for_status_read(std::chrono::milliseconds timeout);

 private:
  /// POST and DELETE need a request signed with the cluster key (when there is one).
  void check_access(const HttpRequest& head, const Route* route) override;
  /// ...and the body that was signed.
  void check_body(const HttpRequest& request, const Route& route) override;
  /// Counts a /status read by the controller (a signed one when there is a key).
  void note_status_read(const HttpRequest& request);
  HttpReply status();
  HttpReply train(const HttpRequest& request);
  HttpReply job(const std::string& job_id) const;
  HttpReply cancel(const std::string& job_id, const HttpRequest& request);
  HttpReply type(const HttpRequest& request) const;

  JobRunner& runner_;
  StatusBoard& board_;
  std::string address_;
  RequestVerifier verifier_;
  std::filesystem::path home_dir_;
  std::atomic<bool> draining_{false};
  std::mutex reads_mutex_;  ///< guards status_reads_
  std::condition_variable reads_cv_;
  std::uint64_t status_reads_ = 0;  ///< /status answered to the controller
  int collector_ = 0;               ///< this API's /metrics collector in Metrics::global()
};

}  // namespace mlswarm
