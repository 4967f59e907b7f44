#include "cluster.h"

#include <fstream>

#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/attempt_fence.h"
#include "mlswarm/error.h"
#include "mlswarm/log.h"
#include "mlswarm/metrics.h"
#include "mlswarm/model_meta.h"

namespace mlswarm {
namespace {

/// Runs one phase of the loop; whatever it throws is logged (at most once a minute for the
/// phase, with how many times it happened, so a full disk does not flood the log) and the
/// loop carries on.
template <typename F>
void guarded_phase(const char* phase, F&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    if (const std::size_t n = log_due(std::string("cluster ") + phase, std::chrono::seconds(60))) {
      spdlog::error("cluster {}: {}{}", phase, e.what(), repeats(n, std::chrono::seconds(60)));
    }
  } catch (...) {
    spdlog::error("cluster {}: unexpected non-standard exception", phase);
  }
}

bool is(const JobRecord& j, JobState state, int attempt) { return j.state == state && j.spec.attempt == attempt; }

constexpr auto kCancelRepeat = std::chrono::seconds(5);

}  // namespace

Cluster::Cluster(JobRegistry& registry, TrainerTransport& transport, ClusterOptions options)
    : registry_(registry), transport_(transport), options_(std::move(options)) {
  if (!options_.discover) {
    auto scanner = std::make_shared<SubnetScanner>(options_.subnet.value_or(Subnet{0, 32}), options_.scan);
    options_.discover = [scanner, subnet = options_.subnet, dns = options_.dns_name] {
      // The union of both sources: the subnet scan and the name's A records.
      std::vector<DiscoveredTrainer> found;
      if (subnet) found = scanner->scan_once();
      if (!dns.empty()) {
        for (auto& t : scanner->probe(resolve_ipv4(dns), false)) {
          const bool known =
              std::any_of(found.begin(), found.end(), [&](const auto& f) { return f.address == t.address; });
          if (!known) found.push_back(std::move(t));
        }
      }
      return found;
    };
  }
  Metrics::global().describe("mlswarm_discovery_pass_seconds", "histogram",
                             "duration of one discovery pass (subnet scan and DNS)");
}

Cluster::~Cluster() { stop(); }

void Cluster::start() {
  stop();
  {
    std::lock_guard lock(mutex_);
    trainers_.clear();
    scans_ = 0;
  }
  not_before_.clear();
  cancels_sent_.clear();
  thread_ = std::jthread([this](std::stop_token stop) { loop(stop); });
}

void Cluster::stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    wake_.notify_all();
    thread_.join();
  }
}

std::vector<TrainerView> Cluster::trainers() const {
  const auto now = SteadyClock::now();
  std::lock_guard lock(mutex_);
  std::vector<TrainerView> out;
  for (const auto& [address, t] : trainers_) {
    out.push_back({address, t.trusted, t.suspect_until > now, t.report.draining, t.report.capacity, t.report.running,
                   t.report.queued, t.last_seen, t.misses});
  }
  return out;
}

int Cluster::scans_completed() const {
  std::lock_guard lock(mutex_);
  return scans_;
}

JobRecord Cluster::submit(JobSpec spec) {
  JobRecord job = registry_.create(std::move(spec), options_.max_queued);
  LogScope log_scope{{"job_id", job.spec.job_id}, {"model_id", job.spec.model_id}};
  spdlog::info("job {} model {}: accepted ({} {} epochs)", job.spec.job_id, job.spec.model_id, job.spec.dataset,
               job.spec.train_opts.epochs);
  wake();
  return job;
}

JobRecord Cluster::cancel(const std::string& job_id) {
  for (int tries = 0; tries < 100; ++tries) {
    auto job = registry_.find(job_id);
    if (!job) throw Error(ErrorCode::kNotFound, fmt::format("unknown job '{}'", job_id), "job_id");
    LogScope log_scope{{"job_id", job_id}, {"model_id", job->spec.model_id}};
    if (is_terminal(job->state)) {
      throw Error(ErrorCode::kConflict, fmt::format("job {} already ended {}", job_id, to_string(job->state)),
                  "job_id");
    }
    auto cancelled = registry_.update_if(
        job_id, [&](const JobRecord& j) { return is(j, job->state, job->spec.attempt); },
        [](JobRecord& j) {
          j.state = JobState::kCancelled;
          j.finished_at = unix_now();
          j.error = "cancelled";
          j.failure = FailureCode::kNone;
        },
        true);
    if (cancelled) {
      spdlog::info(
          "job {} model {}: cancelled{}", job_id, job->spec.model_id,
          job->trainer.empty() ? "" : fmt::format("; {} is told to stop attempt {}", job->trainer, job->spec.attempt));
      wake();  // the next plan sends the cancel to any trainer still running it
      return *cancelled;
    }
    // The loop changed the job between the read and the write (a dispatch, a finish): again.
  }
  throw Error(ErrorCode::kUnavailable, fmt::format("job {} keeps changing; try the cancel again", job_id));
}

std::optional<std::string> Cluster::not_ready_reason() const {
  std::lock_guard lock(mutex_);
  const bool any_trusted =
      std::any_of(trainers_.begin(), trainers_.end(), [](const auto& t) { return t.second.trusted; });
  if (any_trusted) return std::nullopt;
  if (!trainers_.empty()) {
    return fmt::format("{} trainers answer, but none proves the cluster key (CLUSTER_TOKEN_FILE)", trainers_.size());
  }
  if (scans_ == 0) return std::string("discovery has not finished its first pass");
  return fmt::format("no trainer found {} on port {} after {} discovery passes", sources(), options_.scan.port, scans_);
}

void Cluster::wake() {
  {
    std::lock_guard lock(wake_mutex_);
    wake_requested_ = true;
  }
  wake_.notify_all();
}

int free_trainer_slots(const std::vector<TrainerView>& trainers, const std::vector<JobRecord>& jobs) {
  int slots = 0;
  for (const auto& t : trainers) slots += t.trusted && !t.suspect && !t.draining ? t.capacity : 0;
  for (const auto& job : jobs) slots -= is_terminal(job.state) ? 0 : job.spec.trainers;
  return slots;
}

void Cluster::loop(std::stop_token stop) {
  auto next_scan = SteadyClock::now();
  while (!stop.stop_requested()) {
    const auto now = SteadyClock::now();
    const bool scan_due = now >= next_scan;
    if (scan_due) next_scan = now + options_.scan_interval;
    tick(scan_due);
    std::unique_lock lock(wake_mutex_);
    auto wait = std::min<SteadyClock::duration>(options_.poll_interval, next_scan - SteadyClock::now());
    wake_.wait_for(lock, stop, std::max<SteadyClock::duration>(wait, std::chrono::milliseconds(10)),
                   [this] { return wake_requested_; });
    wake_requested_ = false;
  }
}

bool Cluster::may_act() const { return !options_.may_act || options_.may_act(); }

void Cluster::tick(bool scan_due) {
  if (!may_act()) return;  // a leader whose lease is not fresh waits; it may have lost the lead
  if (scan_due) guarded_phase("discovery", [this] { scan(); });
  guarded_phase("poll", [this] { poll(); });
  if (before_plan_) guarded_phase("sweeps", before_plan_);
  // A failed dispatch marks its trainer suspect; planning again places the job elsewhere.
  for (int round = 0; round < 8; ++round) {
    bool again = false;
    guarded_phase("plan", [&] { again = execute(plan(snapshot(), options_.planner)); });
    if (!again || !may_act()) break;  // a lease lost meanwhile: no more attempts numbered
  }
}

std::string Cluster::sources() const {
  std::string text;
  if (options_.subnet) text = "in SUBNET_TRAIN " + options_.subnet->to_string();
  if (!options_.dns_name.empty())
    text += (text.empty() ? "" : " or ") + std::string("at TRAIN_DNS ") + options_.dns_name;
  return text;
}

void Cluster::scan() {
  const auto t0 = SteadyClock::now();
  const std::vector<DiscoveredTrainer> found = options_.discover();
  const double seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  Metrics::global().observe("mlswarm_discovery_pass_seconds", {}, seconds);
  std::lock_guard lock(mutex_);
  ++scans_;
  for (const auto& d : found) {
    const auto it = trainers_.find(d.address);
    if (it == trainers_.end()) {
      if (d.trusted) {
        spdlog::info("trainer {} discovered (pass over {} took {:.3f} s)", d.address, sources(), seconds);
      } else {
        spdlog::warn("host {} answers as a trainer but does not prove the cluster key: untrusted, it gets nothing",
                     d.address);
      }
    } else if (it->second.trusted != d.trusted) {
      spdlog::warn("trainer {} is now {}", d.address, d.trusted ? "trusted (it proved the cluster key)" : "untrusted");
    }
  }
  for (const auto& address : apply_discovery(trainers_, found, options_.max_misses, unix_now())) {
    spdlog::warn("trainer {} dropped: no answer for {} scan passes", address, options_.max_misses);
  }
  spdlog::debug("scan {}: {} trainers in {:.3f} s", scans_, trainers_.size(), seconds);
}

void Cluster::poll() {
  std::vector<std::string> addresses;
  {
    std::lock_guard lock(mutex_);
    for (auto& [address, t] : trainers_) {
      t.polled = false;
      if (t.trusted) addresses.push_back(address);  // an untrusted host gets no signed request
    }
  }
  std::vector<std::future<HttpCallResult>> replies;
  replies.reserve(addresses.size());
  for (const auto& address : addresses) {
    replies.push_back(std::async(std::launch::async, [this, address] { return transport_.status(address); }));
  }
  const double now = unix_now();
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    const HttpCallResult reply = replies[i].get();
    TrainerReport report;
    try {
      if (reply.status != 200) throw Error(ErrorCode::kDataError, peer_error_text(reply));
      report = parse_trainer_report(reply.body);
    } catch (const Error& e) {
      if (log_allowed("poll " + addresses[i] + e.what(), std::chrono::seconds(60))) {
        spdlog::warn("trainer {}: unusable /status ({})", addresses[i], e.what());
      }
      continue;
    }
    std::lock_guard lock(mutex_);
    auto it = trainers_.find(addresses[i]);
    if (it == trainers_.end()) continue;
    it->second.report = std::move(report);
    it->second.last_seen = now;
    it->second.polled = true;
  }
}

ClusterSnapshot Cluster::snapshot() const {
  ClusterSnapshot s;
  s.now = SteadyClock::now();
  s.jobs = registry_.list();
  s.not_before = not_before_;
  std::lock_guard lock(mutex_);
  s.settled = scans_ >= options_.max_misses;  // a fresh controller waits before calling a trainer lost
  for (const auto& [address, t] : trainers_) s.trainers.push_back(t);
  return s;
}

bool Cluster::execute(const std::vector<Action>& actions) {
  bool dispatch_failed = false;
  for (const Action& a : actions) {
    const std::string& job_id = std::visit([](const auto& x) -> const std::string& { return x.job_id; }, a);
    auto job = registry_.find(job_id);
    LogScope log_scope{{"job_id", job_id},
                       {"model_id", job ? job->spec.model_id : std::string()},
                       {"request_id", job ? job->request_id : std::string()}};
    guarded_phase("action", [&] {
      std::visit(
          [&](const auto& x) {
            if constexpr (std::is_same_v<std::decay_t<decltype(x)>, action::Dispatch>) {
              dispatch_failed = !run(x) || dispatch_failed;
            } else {
              run(x);
            }
          },
          a);
    });
  }
  return dispatch_failed;
}

bool Cluster::run(const action::Dispatch& a) {
  auto job = registry_.find(a.job_id);
  if (!job || job->state != JobState::kQueued) return true;
  LogScope trainer_scope{{"trainer", a.trainers.front()}};
  // Never number an attempt below one a trainer already recorded for the job (a journal
  // restored from a backup, a controller that lost its last records).
  int attempt = a.attempt;
  if (!options_.home_dir.empty()) {
    attempt = std::max(attempt, AttemptFence::current(job_dir(options_.home_dir, a.job_id)) + 1);
  }
  const int previous = job->spec.attempt;
  // The attempt is numbered and journaled before anything is sent.
  auto claimed = registry_.update_if(
      a.job_id, [&](const JobRecord& j) { return is(j, JobState::kQueued, previous); },
      [&](JobRecord& j) {
        j.spec.attempt = attempt;
        j.trainer.clear();
        j.trainers.clear();
        j.rendezvous_port = a.port;
      },
      true);
  if (!claimed) return true;  // cancelled meanwhile
  if (!may_act() || !send_ranks(*claimed, a.trainers, a.port)) return false;
  auto running = registry_.update_if(
      a.job_id, [&](const JobRecord& j) { return is(j, JobState::kQueued, attempt); },
      [&](JobRecord& j) {
        j.state = JobState::kRunning;
        j.trainer = a.trainers.front();
        j.trainers = a.trainers;
        j.world_size = static_cast<int>(a.trainers.size());
        j.error.clear();
        if (j.started_at == 0) j.started_at = unix_now();
      },
      true);
  if (!running) {
    // Cancelled while the dispatch was in flight: it stays cancelled, and the trainers stop.
    for (const auto& trainer : a.trainers) {
      const HttpCallResult stop = transport_.cancel(trainer, a.job_id, attempt);
      spdlog::info("job {}: cancelled while attempt {} was being dispatched; {} told to stop it ({})", a.job_id,
                   attempt, trainer, stop.status == 200 ? "done" : peer_error_text(stop));
    }
    return true;
  }
  spdlog::info("job {} model {}: dispatched to {} (attempt {}{})", a.job_id, running->spec.model_id,
               fmt::join(a.trainers, ", "), attempt,
               a.trainers.size() > 1 ? fmt::format(", {} ranks meeting at port {}", a.trainers.size(), a.port) : "");
  return true;
}

bool Cluster::send_ranks(const JobRecord& job, const std::vector<std::string>& trainers, int port) {
  const int attempt = job.spec.attempt;
  nlohmann::json body = to_json(job.spec);
  body["attempt"] = attempt;
  Placement placement;
  placement.world_size = static_cast<int>(trainers.size());
  placement.port = port;
  for (const auto& t : trainers) placement.hosts.push_back(t.substr(0, t.rfind(':')));
  for (std::size_t rank = 0; rank < trainers.size(); ++rank) {
    if (trainers.size() > 1) {
      placement.rank = static_cast<int>(rank);
      body["placement"] = {{"rank", placement.rank},
                           {"world_size", placement.world_size},
                           {"hosts", placement.hosts},
                           {"port", placement.port}};
    }
    const HttpCallResult reply = transport_.dispatch(trainers[rank], body, job.request_id);
    if (reply.status == 202) continue;
    mark_suspect(trainers[rank], fmt::format("it did not take attempt {} of job {} ({})", attempt, job.spec.job_id,
                                             peer_error_text(reply)));
    for (std::size_t taken = 0; taken < rank; ++taken) transport_.cancel(trainers[taken], job.spec.job_id, attempt);
    registry_.update_if(
        job.spec.job_id, [&](const JobRecord& j) { return is(j, JobState::kQueued, attempt); },
        [&](JobRecord& j) { j.error = fmt::format("trainer {} did not take attempt {}", trainers[rank], attempt); },
        false);
    return false;
  }
  return true;
}

void Cluster::run(const action::Adopt& a) {
  auto adopted = registry_.update_if(
      a.job_id, [&](const JobRecord& j) { return is(j, JobState::kQueued, a.attempt); },
      [&](JobRecord& j) {
        j.state = JobState::kRunning;
        j.trainer = a.trainer;
        j.trainers = {a.trainer};
        j.world_size = 1;
        j.error.clear();
        j.progress.update(a.report.progress);
        if (j.started_at == 0) j.started_at = unix_now();
      },
      true);
  if (adopted) {
    spdlog::info("job {}: attempt {} runs on {}, which took the dispatch late; following it there", a.job_id, a.attempt,
                 a.trainer);
  }
}

void Cluster::run(const action::Progress& a) {
  registry_.update_if(
      a.job_id, [&](const JobRecord& j) { return is(j, JobState::kRunning, a.attempt); },
      [&](JobRecord& j) { j.progress.update(a.report.progress); }, false);
}

namespace {

/// Whether HOME_DIR holds a model (a meta.json beside its weights) that this attempt of the job
/// wrote: a version, or the latest. Read as untrusted input; never throws.
bool published_by(const std::filesystem::path& home_dir, const std::string& model_id, const std::string& job_id,
                  int attempt) {
  const auto dir = model_dir(home_dir, model_id);
  const auto written_by_attempt = [&](const std::filesystem::path& meta) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(meta, ec) ||
        !std::filesystem::is_regular_file(meta.parent_path() / "model.pt", ec)) {
      return false;
    }
    std::ifstream in(meta);
    const auto j = nlohmann::json::parse(in, nullptr, false);
    return j.is_object() && j.value("job_id", "") == job_id && j.value("attempt", -1) == attempt;
  };
  if (written_by_attempt(dir / "meta.json")) return true;
  std::error_code ec;
  for (const auto& version : std::filesystem::directory_iterator(dir / "versions", ec)) {
    if (written_by_attempt(version.path() / "meta.json")) return true;
  }
  return false;
}

}  // namespace

void Cluster::run(const action::Finish& a) {
  // A trainer's word is not enough for "succeeded": the attempt's model must be on HOME_DIR
  // (a host that only claims to be a trainer reports success and writes nothing).
  if (a.state == JobState::kSucceeded && !options_.home_dir.empty()) {
    const auto job = registry_.find(a.job_id);
    if (job && !is_terminal(job->state) && job->spec.attempt == a.attempt &&
        !published_by(options_.home_dir, job->spec.model_id, a.job_id, a.attempt)) {
      spdlog::error(
          "job {} model {}: {} reported attempt {} succeeded, but HOME_DIR holds no model of that attempt; "
          "it runs again",
          a.job_id, job->spec.model_id, job->trainer, a.attempt);
      run(action::Requeue{a.job_id, a.attempt, "reported succeeded without writing its model", true,
                          std::chrono::milliseconds(1000)});
      return;
    }
  }
  auto finished = registry_.update_if(
      a.job_id, [&](const JobRecord& j) { return !is_terminal(j.state) && j.spec.attempt == a.attempt; },
      [&](JobRecord& j) {
        j.state = a.state;
        j.failure = a.state == JobState::kFailed ? a.failure : FailureCode::kNone;
        j.error = a.error;
        if (a.progress) j.progress.update(*a.progress);  // the last epoch's accuracy comes with the end
        if (a.state == JobState::kSucceeded) j.progress.fraction = 1.0;
        j.finished_at = unix_now();
      },
      true);
  if (!finished) return;
  not_before_.erase(a.job_id);
  if (a.state == JobState::kSucceeded) {
    spdlog::info("job {} model {}: succeeded on {}", a.job_id, finished->spec.model_id, finished->trainer);
  } else {
    spdlog::error("job {} model {}: {} ({}): {}", a.job_id, finished->spec.model_id, to_string(a.state),
                  to_string(a.failure), a.error);
  }
}

void Cluster::run(const action::Requeue& a) {
  std::string trainer;
  auto queued = registry_.update_if(
      a.job_id, [&](const JobRecord& j) { return is(j, JobState::kRunning, a.attempt); },
      [&](JobRecord& j) {
        trainer = j.trainer;
        j.state = JobState::kQueued;
        j.error = a.reason;
        j.trainer.clear();
        j.trainers.clear();
        if (a.lost) ++j.lost_attempts;
      },
      true);
  if (!queued) return;
  if (a.backoff.count() > 0) {
    not_before_[a.job_id] = SteadyClock::now() + a.backoff;
  } else {
    not_before_.erase(a.job_id);
  }
  spdlog::warn("job {} model {}: {}; re-queued to resume from its checkpoint{}", a.job_id, queued->spec.model_id,
               a.reason, a.backoff.count() > 0 ? fmt::format(" in {} ms", a.backoff.count()) : std::string(" now"));
  wake();
}

void Cluster::run(const action::Cancel& a) {
  // A trainer stops at its next batch (or at the end of a collective): ask again only if it
  // still runs the attempt a while later.
  const auto now = SteadyClock::now();
  std::erase_if(cancels_sent_, [&](const auto& sent) { return now - sent.second > kCancelRepeat; });
  const std::string key = fmt::format("{} {} {}", a.trainer, a.job_id, a.attempt);
  if (!may_act() || !cancels_sent_.try_emplace(key, now).second) return;
  LogScope trainer_scope{{"trainer", a.trainer}};
  const HttpCallResult reply = transport_.cancel(a.trainer, a.job_id, a.attempt);
  spdlog::warn("job {}: trainer {} still runs attempt {} ({}); told it to stop: {}", a.job_id, a.trainer, a.attempt,
               a.reason, reply.status == 200 ? "stopping" : peer_error_text(reply));
}

void Cluster::mark_suspect(const std::string& address, const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    auto it = trainers_.find(address);
    if (it != trainers_.end()) it->second.suspect_until = SteadyClock::now() + options_.suspect_for;
  }
  spdlog::warn("trainer {}: {}; no dispatches to it for {} s", address, why, options_.suspect_for.count() / 1000);
}

}  // namespace mlswarm
