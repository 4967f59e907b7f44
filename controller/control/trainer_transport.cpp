#include "trainer_transport.h"

#include <fmt/format.h>

#include "mlswarm/error.h"
#include "mlswarm/http.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/signing.h"

namespace mlswarm {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxReportedJobs = 10000;

long long unix_seconds() { return static_cast<long long>(unix_now()); }

}  // namespace

HttpCallResult HttpTrainerTransport::call(std::string method, const std::string& address, std::string target,
                                          std::string body, const std::string& request_id) {
  HttpCall c;
  c.method = std::move(method);
  c.address = address;
  c.target = std::move(target);
  c.body = std::move(body);
  if (!options_.cluster_key.empty()) {
    c.headers = sign_request(options_.cluster_key, c.method, c.target, c.address, c.body, unix_seconds());
  }
  if (!request_id.empty()) c.headers.emplace_back("X-Request-Id", request_id);
  return http_call(std::move(c), HttpCallLimits{options_.connect_timeout, options_.timeout, options_.max_reply_bytes});
}

HttpCallResult HttpTrainerTransport::status(const std::string& address) {
  return call("GET", address, "/status", {}, {});
}

HttpCallResult HttpTrainerTransport::dispatch(const std::string& address, const json& spec,
                                              const std::string& request_id) {
  return call("POST", address, "/train", spec.dump(), request_id);
}

HttpCallResult HttpTrainerTransport::cancel(const std::string& address, const std::string& job_id, int attempt) {
  return call("DELETE", address, fmt::format("/jobs/{}?attempt={}", job_id, attempt), {}, {});
}

TrainerReport parse_trainer_report(std::string_view body) {
  if (json_nesting_depth(body) > kMaxJsonDepth) throw Error(ErrorCode::kDataError, "/status nests too deep");
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(ErrorCode::kDataError, "/status is not a JSON object");
  const auto trainer = j.find("trainer");
  const auto jobs = j.find("jobs");
  if (trainer == j.end() || !trainer->is_object()) throw Error(ErrorCode::kDataError, "/status has no trainer object");
  if (jobs == j.end() || !jobs->is_array()) throw Error(ErrorCode::kDataError, "/status has no jobs array");
  if (jobs->size() > kMaxReportedJobs) throw Error(ErrorCode::kDataError, "/status reports too many jobs");
  TrainerReport report;
  report.capacity = static_cast<int>(checked_int_or(*trainer, "capacity", 0, 0, 4096));
  report.running = static_cast<int>(checked_int_or(*trainer, "running", 0, 0, 1 << 20));
  report.queued = static_cast<int>(checked_int_or(*trainer, "queued", 0, 0, 1 << 20));
  if (const auto d = trainer->find("draining"); d != trainer->end() && !d->is_null()) {
    if (!d->is_boolean()) throw Error(ErrorCode::kDataError, "/status: draining must be a boolean");
    report.draining = d->get<bool>();
  }
  report.jobs.reserve(jobs->size());
  for (const auto& job : *jobs) report.jobs.push_back(job_record_from_json(job));  // throws kDataError only
  return report;
}

std::string peer_error_text(const HttpCallResult& result) {
  if (result.status < 0) return result.error;
  std::string text;
  const json j = json::parse(result.body, nullptr, false);
  if (j.is_object()) {
    const auto e = j.find("error");
    if (e != j.end() && e->is_object()) {
      const auto m = e->find("message");
      if (m != e->end() && m->is_string()) text = m->get<std::string>();
    } else if (e != j.end() && e->is_string()) {
      text = e->get<std::string>();
    }
  }
  if (text.empty()) text = j.is_discarded() ? "a reply that is not JSON" : "a reply without an error message";
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  return fmt::format("{} {}", result.status, text);
}

}  // namespace mlswarm
