#pragma once

#include <chrono>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace mlswarm {

/// Sets up the process-wide spdlog logger on stderr, one line per event, UTC timestamps.
/// `level` is "debug", "info", "warn" or "error" (any case); `format` is "text" (readable) or "json"
/// (one JSON object per line: ts, level, daemon, msg and the fields of the LogScopes
/// around the call). Call once from main before starting threads. Throws
/// Error(kInvalidArgument) for an unknown format.
void init_logging(std::string_view level, std::string_view format = "text", std::string_view daemon = "");

/// Fields (job_id, model_id, trainer, request_id, ...) attached to every log line this
/// thread writes while the scope lives. Scopes nest; an inner field of the same name
/// shadows the outer one. In text logs a field is appended as key=value unless the
/// message already names its value.
class LogScope {
 public:
  LogScope(std::initializer_list<std::pair<const char*, std::string>> fields);
  ~LogScope();
  LogScope(const LogScope&) = delete;
  LogScope& operator=(const LogScope&) = delete;

 private:
  std::size_t restore_size_;
};

/// For events that may repeat every tick (a full disk, a broken peer): true the first time
/// `key` is seen, then at most once per `every`. Thread-safe.
bool log_allowed(const std::string& key, std::chrono::seconds every);
/// log_allowed with a count: 0 while `key` is to stay quiet, else how many times it happened
/// since it was last logged (this time included), for a line that says so. Key by what does
/// not change between repeats (not by a message that names a temporary file). Thread-safe.
std::size_t log_due(const std::string& key, std::chrono::seconds every);
/// " (N times in the last M s)" for a count from log_due above 1, else "".
std::string repeats(std::size_t count, std::chrono::seconds every);

/// The innermost value of `key` in this thread's scopes, or empty.
std::string log_field(std::string_view key);

}  // namespace mlswarm
