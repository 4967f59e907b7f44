#include "trainer_api.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/attempt_fence.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/job_metrics.h"
#include "mlswarm/log.h"
#include "mlswarm/model_meta.h"

namespace mlswarm {

using nlohmann::json;

namespace {

/// The `attempt` query parameter of a cancel, when given.
std::optional<int> attempt_param(const HttpRequest& request) {
  auto text = request.query_param("attempt");
  if (!text) return std::nullopt;
  std::size_t used = 0;
  int value = -1;
  try {
    value = std::stoi(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size() || value < 0 || value > kMaxAttempt) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("attempt must be an integer in 0..{}", kMaxAttempt),
                "attempt");
  }
  return value;
}

}  // namespace

TrainerApi::TrainerApi(JobRunner& runner, StatusBoard& board, std::string address, std::string cluster_key,
                       std::string advertised, std::filesystem::path home_dir)
    : runner_(runner),
      board_(board),
      address_(std::move(address)),
      verifier_(std::move(cluster_key), std::chrono::seconds(30), 100000, std::move(advertised)),
      home_dir_(std::move(home_dir)) {
  using A = Access;
  auto get = [this](std::string pattern, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), A::kOpen, 0, std::move(handler)});
  };
  // Probes (discovery's challenge, health): answered on the network thread, never behind other work.
  auto probe = [this](std::string pattern, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), A::kOpen, 0, std::move(handler), true});
  };
  probe("/type", [this](const HttpRequest& r, const RouteParams&) { return type(r); });
  probe("/healthz", [](const HttpRequest&, const RouteParams&) { return HttpReply::json(200, {{"status", "ok"}}); });
  get("/status", [this](const HttpRequest& r, const RouteParams&) {
    HttpReply reply = status();
    note_status_read(r);
    return reply;
  });
  get("/jobs", [this](const HttpRequest&, const RouteParams&) { return status(); });
  get("/jobs/{id}", [this](const HttpRequest&, const RouteParams& p) {
    require_valid_id(p[0], "job_id");
    return job(p[0]);
  });
  get("/metrics", [](const HttpRequest&, const RouteParams&) { return metrics_reply(); });
  routes_.add(
      {"POST", "/train", A::kWrite, 1u << 20, [this](const HttpRequest& r, const RouteParams&) { return train(r); }});
  routes_.add({"DELETE", "/jobs/{id}", A::kWrite, 0, [this](const HttpRequest& r, const RouteParams& p) {
                 require_valid_id(p[0], "job_id");
                 return cancel(p[0], r);
               }});

  Metrics& m = Metrics::global();
  m.describe("mlswarm_trainer_capacity", "gauge", "worker threads");
  collector_ = m.add_collector([this](Metrics& metrics) {
    set_job_gauges(metrics, board_.snapshot());
    metrics.set("mlswarm_trainer_capacity", {}, runner_.capacity());
  });
}

TrainerApi::~TrainerApi() { Metrics::global().remove_collector(collector_); }

void TrainerApi::check_access(const HttpRequest& head, const Route* route) {
  if (route == nullptr || route->access != Access::kWrite) return;
  try {
    verifier_.verify_head(head, static_cast<long long>(unix_now()));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kForbidden &&
        log_allowed("refused " + std::string(e.what()), std::chrono::seconds(60))) {
      spdlog::warn("{} {} from {} refused: {}", head.method, head.path, head.remote_addr, e.what());
    }
    throw;
  }
}

void TrainerApi::check_body(const HttpRequest& request, const Route& route) {
  if (route.access == Access::kWrite) verifier_.verify_body(request);
}

void TrainerApi::note_status_read(const HttpRequest& request) {
  bool by_controller = !verifier_.enabled();
  if (!by_controller && !request.header("x-mlswarm-signature").empty()) {
    try {
      verifier_.verify_head(request, static_cast<long long>(unix_now()));
      by_controller = true;
    } catch (const Error&) {
    }
  }
  if (!by_controller) return;
  std::lock_guard lock(reads_mutex_);
  ++status_reads_;
  reads_cv_.notify_all();
}

void TrainerApi::start_draining() { draining_ = true; }

bool TrainerApi::wait_for_status_read(std::chrono::milliseconds timeout) {
  std::unique_lock lock(reads_mutex_);
  const std::uint64_t before = status_reads_;
  return reads_cv_.wait_for(lock, timeout, [&] { return status_reads_ > before; });
}

HttpReply TrainerApi::type(const HttpRequest& request) const {
  json reply = {{"type", "train"}};
  const std::string challenge = request.header("x-mlswarm-challenge");
  if (!challenge.empty() && verifier_.enabled()) {
    std::string proof = verifier_.prove(challenge, request.header("host"), request.local_addr);
    if (!proof.empty()) {
      reply["proof"] = std::move(proof);
    } else if (log_allowed("challenge " + request.header("host"), std::chrono::seconds(60))) {
      spdlog::warn(
          "discovery challenge from {} for host {} not answered: not a well-formed challenge, or not an "
          "address and port of this trainer ({})",
          request.remote_addr, request.header("host"), request.local_addr);
    }
  }
  return HttpReply::json(200, reply);
}

HttpReply TrainerApi::status() {
  const double now = unix_now();
  json jobs = json::array();
  int running = 0;
  int queued = 0;
  for (const auto& job : board_.snapshot()) {
    running += job.state == JobState::kRunning ? 1 : 0;
    queued += job.state == JobState::kQueued ? 1 : 0;
    jobs.push_back(to_json(job, now));
  }
  const bool draining = draining_.load();
  const int capacity = draining ? 0 : runner_.capacity();
  return HttpReply::json(200, {{"trainer",
                                {{"address", address_},
                                 {"capacity", capacity},
                                 {"running", running},
                                 {"queued", queued},
                                 {"draining", draining},
                                 {"free", std::max(0, capacity - running - queued)}}},
                               {"jobs", std::move(jobs)}});
}

HttpReply TrainerApi::train(const HttpRequest& request) {
  if (draining_) throw Error(ErrorCode::kUnavailable, "the trainer is shutting down");
  JobSpec spec = parse_job_spec(parse_json_body(request));
  // The attempt starts on HOME_DIR before it is taken: a dispatch replayed after this trainer
  // restarted (its nonces forgotten) meets its own attempt there and is refused. Rank 0 (or
  // the only rank) owns the job's files; other ranks write nothing.
  if (!home_dir_.empty() && !spec.job_id.empty() && (!spec.placement || spec.placement->rank == 0)) {
    try {
      AttemptFence(job_dir(home_dir_, spec.job_id), spec.attempt).start();
    } catch (const Error& e) {
      spdlog::warn("job {} model {}: dispatch of attempt {} from {} refused: {}", spec.job_id, spec.model_id,
                   spec.attempt, request.remote_addr, e.what());
      throw;
    }
  }
  JobRecord record = runner_.submit(std::move(spec));
  return HttpReply::json(202, to_json(record, unix_now()));
}

HttpReply TrainerApi::job(const std::string& job_id) const {
  auto record = board_.find(job_id);
  if (!record) throw Error(ErrorCode::kNotFound, fmt::format("unknown job '{}'", job_id), "job_id");
  return HttpReply::json(200, to_json(*record, unix_now()));
}

HttpReply TrainerApi::cancel(const std::string& job_id, const HttpRequest& request) {
  return HttpReply::json(200, to_json(runner_.cancel(job_id, attempt_param(request)), unix_now()));
}

}  // namespace mlswarm
