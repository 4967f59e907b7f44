#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "http_call.h"
#include "mlswarm/job.h"

namespace mlswarm {

/// How the controller talks to trainers. The cluster's executor only calls this interface,
/// so its tests substitute a fake (FakeTrainers in tests/unit/controller/control/cluster_test.cpp);
/// HttpTrainerTransport makes the real, signed calls.
/// Implementations must be thread-safe: polls run concurrently.
class TrainerTransport {
 public:
  virtual ~TrainerTransport() = default;
  /// GET /status of the trainer at "ip:port".
  virtual HttpCallResult status(const std::string& address) = 0;
  /// POST /train with `spec` (its attempt set), carrying the job's request id.
  virtual HttpCallResult dispatch(const std::string& address, const nlohmann::json& spec,
                                  const std::string& request_id) = 0;
  /// DELETE /jobs/{id}?attempt=N: stop that attempt of the job if it runs there.
  virtual HttpCallResult cancel(const std::string& address, const std::string& job_id, int attempt) = 0;
};

struct TrainerCallOptions {
  std::chrono::milliseconds connect_timeout{300};
  std::chrono::milliseconds timeout{3000};  ///< the whole exchange
  std::size_t max_reply_bytes = 1u << 20;
  /// The cluster key (CLUSTER_TOKEN_FILE): every call is signed with it; empty = unsigned.
  std::string cluster_key;
};

/// Real calls over HTTP (http_call), each signed with the cluster key. Thread-safe.
class HttpTrainerTransport final : public TrainerTransport {
 public:
  explicit HttpTrainerTransport(TrainerCallOptions options) : options_(std::move(options)) {}
  HttpCallResult status(const std::string& address) override;
  HttpCallResult dispatch(const std::string& address, const nlohmann::json& spec,
                          const std::string& request_id) override;
  HttpCallResult cancel(const std::string& address, const std::string& job_id, int attempt) override;

 private:
  HttpCallResult call(std::string method, const std::string& address, std::string target, std::string body,
                      const std::string& request_id);
  TrainerCallOptions options_;
};

/// A trainer's GET /status, read as untrusted input.
struct TrainerReport {
  int capacity = 0;
  int running = 0;
  int queued = 0;
  bool draining = false;  ///< shutting down: takes no new jobs
  std::vector<JobRecord> jobs;
};

/// Parses a /status body. Throws Error(kDataError) for anything but the documented shape
/// with values in range (never another exception type).
TrainerReport parse_trainer_report(std::string_view body);

/// The error message in a peer's JSON error reply, cut to 200 characters, or a description
/// of what came back instead. Never throws.
std::string peer_error_text(const HttpCallResult& result);

}  // namespace mlswarm
