#include "trainer_api.h"

#include <fmt/format.h>

#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/job_metrics.h"

namespace mlswarm {

using nlohmann::json;

TrainerApi::TrainerApi(JobRunner& runner, StatusBoard& board, std::string address, std::string cluster_token)
    : runner_(runner), board_(board), address_(std::move(address)), cluster_token_(std::move(cluster_token)) {
  Metrics& m = Metrics::global();
  m.describe("mlswarm_trainer_capacity", "gauge", "worker threads");
  collector_ = m.add_collector([this](Metrics& metrics) {
    set_job_gauges(metrics, board_.snapshot());
    metrics.set("mlswarm_trainer_capacity", {}, runner_.capacity());
  });
}

TrainerApi::~TrainerApi() { Metrics::global().remove_collector(collector_); }

HttpReply TrainerApi::handle(const HttpRequest& request) {
  return guarded(
      [this](const HttpRequest& req) -> HttpReply {
        const auto parts = split_path(req.path);
        const std::string& m = req.method;
        if (m != "GET" && m != "HEAD") require_token(req, cluster_token_, "cluster token");
        auto method_not_allowed = [&](const char* allowed) {
          HttpReply reply = HttpReply::error(Error(
              ErrorCode::kMethodNotAllowed, fmt::format("{} {} is not supported; use {}", m, req.path, allowed)));
          reply.headers["Allow"] = allowed;
          return reply;
        };
        if (parts.size() == 1 && parts[0] == "type") {
          return m == "GET" ? HttpReply::json(200, {{"type", "train"}}) : method_not_allowed("GET");
        }
        if (parts.size() == 1 && parts[0] == "healthz") {
          return m == "GET" ? HttpReply::json(200, {{"status", "ok"}}) : method_not_allowed("GET");
        }
        if (parts.size() == 1 && parts[0] == "status") {
          return m == "GET" ? status() : method_not_allowed("GET");
        }
        if (parts.size() == 1 && parts[0] == "train") {
          return m == "POST" ? train(req) : method_not_allowed("POST");
        }
        if (parts.size() == 1 && parts[0] == "metrics") {
          return m == "GET" ? metrics_reply() : method_not_allowed("GET");
        }
        if (parts.size() == 1 && parts[0] == "jobs") {
          return m == "GET" ? status() : method_not_allowed("GET");
        }
        if (parts.size() == 2 && parts[0] == "jobs") {
          require_valid_id(parts[1], "job_id");
          if (m == "GET") return job(parts[1]);
          if (m == "DELETE") return HttpReply::json(200, to_json(runner_.cancel(parts[1]), unix_now()));
          return method_not_allowed("GET, DELETE");
        }
        throw Error(ErrorCode::kNotFound, fmt::format("no route {} {}", m, req.path));
      },
      request);
}

HttpReply TrainerApi::status() const {
  const double now = unix_now();
  json jobs = json::array();
  int running = 0;
  int queued = 0;
  for (const auto& job : board_.snapshot()) {
    running += job.state == JobState::kRunning ? 1 : 0;
    queued += job.state == JobState::kQueued ? 1 : 0;
    jobs.push_back(to_json(job, now));
  }
  return HttpReply::json(200, {{"trainer",
                                {{"address", address_},
                                 {"capacity", runner_.capacity()},
                                 {"running", running},
                                 {"queued", queued},
                                 {"free", std::max(0, runner_.capacity() - running - queued)}}},
                               {"jobs", std::move(jobs)}});
}

HttpReply TrainerApi::train(const HttpRequest& request) {
  JobSpec spec = parse_job_spec(parse_json_body(request));
  JobRecord record = runner_.submit(std::move(spec));
  return HttpReply::json(202, to_json(record, unix_now()));
}

HttpReply TrainerApi::job(const std::string& job_id) const {
  auto record = board_.find(job_id);
  if (!record) throw Error(ErrorCode::kNotFound, fmt::format("unknown job '{}'", job_id), "job_id");
  return HttpReply::json(200, to_json(*record, unix_now()));
}

}  // namespace mlswarm
