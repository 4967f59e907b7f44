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
};

/// The controller's calls to one trainer at "ip:port", each on a fresh connection with
/// connect and read deadlines so that a trainer that hangs cannot stall the caller.
/// Stateless and thread-safe.
TrainerReply trainer_get(const std::string& address, const std::string& path, const TrainerCallOptions& options);
TrainerReply trainer_post(const std::string& address, const std::string& path, const nlohmann::json& body,
                          const TrainerCallOptions& options);
TrainerReply trainer_delete(const std::string& address, const std::string& path, const TrainerCallOptions& options);

}  // namespace mlswarm
