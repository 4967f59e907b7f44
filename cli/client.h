#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace mlswarm::cli_tool {

/// A reply the user should see: the controller's error message (or why it could not be
/// reached), and the exit code it maps to.
struct CliError : std::runtime_error {
  CliError(std::string message, int exit_code) : std::runtime_error(std::move(message)), code(exit_code) {}
  int code;
};

/// Exit codes of the mlswarm command: 0 success, 1 the job or request failed, 2 usage,
/// 3 the controller could not be reached, 4 the token was refused.
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUnreachable = 3;
inline constexpr int kExitUnauthorized = 4;

struct Reply {
  int status = 0;
  nlohmann::json body;
  std::string text;  ///< the raw body, for --json
};

/// The controller's JSON API over HTTP(S), with the bearer token when one is set. Each call
/// opens what it needs; 2xx replies are returned, anything else throws CliError with the
/// controller's message.
class Client {
 public:
  Client(std::string url, std::string token) : url_(std::move(url)), token_(std::move(token)) {}
  Reply get(const std::string& path) const;
  Reply post_json(const std::string& path, const nlohmann::json& body) const;
  Reply put_json(const std::string& path, const nlohmann::json& body) const;
  Reply del(const std::string& path) const;
  /// POST path as multipart/form-data with one file part named "image".
  Reply post_image(const std::string& path, const std::string& filename, const std::string& content) const;
  const std::string& url() const { return url_; }

 private:
  std::string url_;
  std::string token_;
};

/// "lost_trainer: ..." style text of an error reply body, or its status line.
std::string error_text(int status, const nlohmann::json& body);

}  // namespace mlswarm::cli_tool
