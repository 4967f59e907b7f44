#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace mlswarm {

/// A reply from a trainer: the HTTP status (-1 when nothing usable came back) and the
/// parsed JSON body (null when it was not JSON).
struct TrainerReply {
  int status = -1;
  nlohmann::json body;
  std::string transport_error;
};

struct TrainerCallOptions {
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds read_timeout{2000};
  std::string cluster_token;  ///< sent as a bearer token when not empty
  std::string request_id;     ///< sent as X-Request-Id when not empty
};

/// The controller's calls to one trainer at "ip:port", each on a fresh connection with
/// connect, read and write deadlines so that a trainer that accepts and never answers
/// cannot stall the caller past connect_timeout + read_timeout.
/// Stateless and thread-safe.
TrainerReply trainer_get(const std::string& address, const std::string& path, const TrainerCallOptions& options);
TrainerReply trainer_post(const std::string& address, const std::string& path, const nlohmann::json& body,
                          const TrainerCallOptions& options);
TrainerReply trainer_delete(const std::string& address, const std::string& path, const TrainerCallOptions& options);

}  // namespace mlswarm
