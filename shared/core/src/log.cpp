#include "mlswarm/log.h"

#include <cctype>
#include <ctime>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

thread_local std::vector<std::pair<std::string, std::string>> t_fields;

std::string utc_timestamp(spdlog::log_clock::time_point tp) {
  const auto since = tp.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since - secs).count();
  std::time_t t = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, millis);
}

/// The fields in force for this thread, innermost winning, in first-set order.
std::vector<std::pair<std::string, std::string>> current_fields() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [k, v] : t_fields) {
    bool replaced = false;
    for (auto& [ok, ov] : out) {
      if (ok == k) {
        ov = v;
        replaced = true;
      }
    }
    if (!replaced) out.emplace_back(k, v);
  }
  return out;
}

class Formatter final : public spdlog::formatter {
 public:
  Formatter(bool json, std::string daemon) : json_(json), daemon_(std::move(daemon)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    const std::string level(spdlog::level::to_string_view(msg.level).data(),
                            spdlog::level::to_string_view(msg.level).size());
    std::string line;
    if (json_) {
      nlohmann::ordered_json j;
      j["ts"] = utc_timestamp(msg.time);
      j["level"] = level;
      if (!daemon_.empty()) j["daemon"] = daemon_;
      j["msg"] = text;
      for (auto& [k, v] : current_fields()) {
        if (!v.empty()) j[k] = v;
      }
      line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      line = fmt::format("{} {:<5} {}", utc_timestamp(msg.time), level, text);
      for (auto& [k, v] : current_fields()) {
        if (!v.empty() && text.find(v) == std::string_view::npos) line += fmt::format(" {}={}", k, v);
      }
    }
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<Formatter>(json_, daemon_); }

 private:
  bool json_;
  std::string daemon_;
};

}  // namespace

void init_logging(std::string_view level, std::string_view format, std::string_view daemon) {
  if (format != "text" && format != "json") {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("LOG_FORMAT must be text or json, got '{}'", format),
                "LOG_FORMAT");
  }
  std::string name(level);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name == "warning") name = "warn";
  if (name != "debug" && name != "info" && name != "warn" && name != "error") {
    // spdlog would read an unknown name as "off" and silence the daemon.
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("LOG_LEVEL must be debug, info, warn or error, got '{}'", level), "LOG_LEVEL");
  }
  auto logger = spdlog::get("mlswarm");
  if (!logger) logger = spdlog::stderr_logger_mt("mlswarm");
  logger->set_formatter(std::make_unique<Formatter>(format == "json", std::string(daemon)));
  logger->set_level(spdlog::level::from_str(name));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

LogScope::LogScope(std::initializer_list<std::pair<const char*, std::string>> fields) : restore_size_(t_fields.size()) {
  for (const auto& [k, v] : fields) t_fields.emplace_back(k, v);
}

LogScope::~LogScope() { t_fields.resize(restore_size_); }

bool log_allowed(const std::string& key, std::chrono::seconds every) { return log_due(key, every) > 0; }

std::size_t log_due(const std::string& key, std::chrono::seconds every) {
  struct Seen {
    std::chrono::steady_clock::time_point logged;
    std::size_t since = 0;  ///< occurrences not logged since then
  };
  static std::mutex mutex;
  static std::map<std::string, Seen> seen;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex);
  if (seen.size() > 1024) seen.clear();
  auto [it, added] = seen.try_emplace(key, Seen{now, 0});
  if (added) return 1;
  if (now - it->second.logged < every) {
    ++it->second.since;
    return 0;
  }
  const std::size_t count = it->second.since + 1;
  it->second = Seen{now, 0};
  return count;
}

std::string repeats(std::size_t count, std::chrono::seconds every) {
  if (count <= 1) return {};
  return " (" + std::to_string(count) + " times in the last " + std::to_string(every.count()) + " s)";
}

std::string log_field(std::string_view key) {
  for (auto it = t_fields.rbegin(); it != t_fields.rend(); ++it) {
    if (it->first == key) return it->second;
  }
  return {};
}

}  // namespace mlswarm
