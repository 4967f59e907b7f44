#include "cluster.h"

#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/log.h"
#include "mlswarm/metrics.h"
#include "scheduler.h"

namespace mlswarm {

using nlohmann::json;

Cluster::Cluster(JobRegistry& registry, ClusterOptions options)
    : registry_(registry),
      options_(std::move(options)),
      scanner_(options_.subnet.value_or(Subnet{0, 32}), options_.scan) {
  Metrics::global().describe("mlswarm_discovery_pass_seconds", "histogram",
                             "duration of one discovery pass (subnet scan and DNS)");
}

Cluster::~Cluster() { stop(); }

void Cluster::start() {
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
  std::lock_guard lock(mutex_);
  std::vector<TrainerView> out;
  for (const auto& [address, t] : trainers_) out.push_back(t.view);
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
  {
    std::lock_guard lock(wake_mutex_);
    wake_requested_ = true;
  }
  wake_.notify_all();
  return job;
}

JobRecord Cluster::cancel(const std::string& job_id) {
  auto job = registry_.find(job_id);
  if (!job) throw Error(ErrorCode::kNotFound, fmt::format("unknown job '{}'", job_id), "job_id");
  LogScope log_scope{{"job_id", job_id}, {"model_id", job->spec.model_id}, {"trainer", job->trainer}};
  if (is_terminal(job->state)) {
    throw Error(ErrorCode::kConflict, fmt::format("job {} already ended {}", job_id, to_string(job->state)),
                "job_id");
  }
  if (job->state == JobState::kRunning && !job->trainer.empty()) {
    TrainerReply reply = trainer_delete(job->trainer, "/jobs/" + job_id, options_.calls);
    if (reply.status == 200 || reply.status == 409) {
      spdlog::info("job {} model {}: cancel forwarded to {}", job_id, job->spec.model_id, job->trainer);
      return *job;  // the trainer stops it within a batch; the next poll records `cancelled`
    }
    spdlog::warn("job {}: trainer {} did not take the cancel ({}); cancelling here", job_id, job->trainer,
                 reply.status > 0 ? std::to_string(reply.status) : reply.transport_error);
  }
  auto updated = registry_.update(
      job_id,
      [](JobRecord& j) {
        j.state = JobState::kCancelled;
        j.finished_at = unix_now();
        j.error = "cancelled";
      },
      true);
  spdlog::info("job {} model {}: cancelled", job_id, job->spec.model_id);
  return *updated;
}

std::optional<std::string> Cluster::not_ready_reason() const {
  std::lock_guard lock(mutex_);
  if (!trainers_.empty()) return std::nullopt;
  if (scans_ == 0) return std::string("discovery has not finished its first pass");
  return fmt::format("no trainer found {} on port {} after {} discovery passes", sources(), options_.scan.port,
                     scans_);
}

void Cluster::loop(std::stop_token stop) {
  auto next_scan = std::chrono::steady_clock::now();
  while (!stop.stop_requested()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= next_scan) {
      scan();
      next_scan = now + options_.scan_interval;
    }
    poll();
    reconcile();
    dispatch();
    std::unique_lock lock(wake_mutex_);
    auto wait = std::min<std::chrono::steady_clock::duration>(options_.poll_interval,
                                                              next_scan - std::chrono::steady_clock::now());
    wake_.wait_for(lock, stop, std::max<std::chrono::steady_clock::duration>(wait, std::chrono::milliseconds(10)),
                   [this] { return wake_requested_; });
    wake_requested_ = false;
  }
}

std::string Cluster::sources() const {
  std::string text;
  if (options_.subnet) text = "in SUBNET_TRAIN " + options_.subnet->to_string();
  if (!options_.dns_name.empty()) text += (text.empty() ? "" : " or ") + std::string("at TRAIN_DNS ") + options_.dns_name;
  return text;
}

void Cluster::scan() {
  auto t0 = std::chrono::steady_clock::now();
  // The union of both sources: the subnet scan and the name's A records.
  std::vector<std::string> found;
  if (options_.subnet) found = scanner_.scan_once();
  if (!options_.dns_name.empty()) {
    for (auto& address : scanner_.probe(resolve_ipv4(options_.dns_name), false)) found.push_back(std::move(address));
    std::sort(found.begin(), found.end());
    found.erase(std::unique(found.begin(), found.end()), found.end());
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Metrics::global().observe("mlswarm_discovery_pass_seconds", {}, seconds);
  const double now = unix_now();
  std::lock_guard lock(mutex_);
  ++scans_;
  for (const auto& address : found) {
    auto [it, added] = trainers_.try_emplace(address);
    it->second.view.address = address;
    it->second.view.last_seen = now;
    it->second.view.misses = 0;
    if (added) spdlog::info("trainer {} discovered (pass over {} took {:.3f} s)", address, sources(), seconds);
  }
  for (auto it = trainers_.begin(); it != trainers_.end();) {
    bool seen = std::binary_search(found.begin(), found.end(), it->first);
    if (!seen && ++it->second.view.misses >= options_.max_misses) {
      spdlog::warn("trainer {} dropped: no answer for {} scan passes", it->first, it->second.view.misses);
      it = trainers_.erase(it);
    } else {
      ++it;
    }
  }
  spdlog::debug("scan {}: {} trainers in {:.3f} s", scans_, trainers_.size(), seconds);
}

void Cluster::poll() {
  std::vector<std::string> addresses;
  {
    std::lock_guard lock(mutex_);
    for (auto& [address, t] : trainers_) {
      t.polled = false;
      addresses.push_back(address);
    }
  }
  std::vector<std::future<TrainerReply>> replies;
  for (const auto& address : addresses) {
    replies.push_back(std::async(std::launch::async, [this, address] {
      return trainer_get(address, "/status", options_.calls);
    }));
  }
  const double now = unix_now();
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    TrainerReply reply = replies[i].get();
    if (reply.status != 200 || !reply.body.is_object()) continue;
    std::map<std::string, JobRecord> jobs;
    try {
      for (const auto& j : reply.body.at("jobs")) {
        JobRecord job = job_record_from_json(j);
        jobs[job.spec.job_id] = std::move(job);
      }
    } catch (const std::exception& e) {
      spdlog::warn("trainer {}: unreadable /status ({})", addresses[i], e.what());
      continue;
    }
    std::lock_guard lock(mutex_);
    auto it = trainers_.find(addresses[i]);
    if (it == trainers_.end()) continue;
    const json& t = reply.body["trainer"];
    try {
      it->second.view.capacity = static_cast<int>(checked_int_or(t, "capacity", 0, 0, 4096));
      it->second.view.running = static_cast<int>(checked_int_or(t, "running", 0, 0, 1 << 20));
      it->second.view.queued = static_cast<int>(checked_int_or(t, "queued", 0, 0, 1 << 20));
    } catch (const Error& e) {
      spdlog::warn("trainer {}: unreadable /status ({})", addresses[i], e.what());
      continue;
    }
    it->second.view.last_seen = now;
    it->second.polled = true;
    it->second.jobs = std::move(jobs);
  }
}

void Cluster::reconcile() {
  std::unique_lock lock(mutex_);
  const bool settled = scans_ >= options_.max_misses;  // a fresh controller waits before judging
  for (const JobRecord& job : registry_.list()) {
    if (job.state != JobState::kRunning) continue;
    LogScope log_scope{{"job_id", job.spec.job_id}, {"model_id", job.spec.model_id}, {"trainer", job.trainer},
                       {"request_id", job.request_id}};
    auto t = trainers_.find(job.trainer);
    if (t == trainers_.end()) {
      if (settled) {
        lock.unlock();
        requeue(job, fmt::format("trainer {} lost", job.trainer));
        lock.lock();
      }
      continue;
    }
    if (!t->second.polled) continue;
    auto reported = t->second.jobs.find(job.spec.job_id);
    if (reported == t->second.jobs.end() || reported->second.spec.attempt != job.spec.attempt) {
      lock.unlock();
      requeue(job, fmt::format("trainer {} no longer runs attempt {}", job.trainer, job.spec.attempt));
      lock.lock();
      continue;
    }
    const JobRecord r = reported->second;
    lock.unlock();
    bool finished = is_terminal(r.state);
    auto updated = registry_.update(
        job.spec.job_id,
        [&](JobRecord& j) {
          j.epoch = r.epoch;
          j.step = r.step;
          j.steps_per_epoch = r.steps_per_epoch;
          j.progress = r.progress;
          j.loss = r.loss;
          if (r.accuracy) j.accuracy = r.accuracy;
          j.images_per_s = r.images_per_s;
          j.device = r.device;
          if (finished) {
            j.state = r.state;
            j.error = r.error;
            j.finished_at = r.finished_at > 0 ? r.finished_at : unix_now();
          }
        },
        finished);
    if (finished && r.state == JobState::kFailed && r.error.rfind("interrupted", 0) == 0) {
      // The trainer shut down (a rolling update): the job continues elsewhere.
      requeue(*updated, fmt::format("trainer {} shut down", job.trainer));
    } else if (finished) {
      spdlog::info("job {} model {}: {} on {}{}", job.spec.job_id, job.spec.model_id, to_string(r.state),
                   job.trainer, r.error.empty() ? "" : ": " + r.error);
    }
    lock.lock();
  }
}

void Cluster::requeue(const JobRecord& job, const std::string& reason) {
  const bool give_up = job.spec.attempt >= options_.max_attempts;
  registry_.update(
      job.spec.job_id,
      [&](JobRecord& j) {
        if (give_up) {
          j.state = JobState::kFailed;
          j.error = fmt::format("gave up after {} attempts; last: {}", j.spec.attempt, reason);
          j.finished_at = unix_now();
        } else {
          j.state = JobState::kQueued;
          j.error = reason;
          j.trainer.clear();
        }
      },
      true);
  if (give_up) {
    spdlog::error("job {} model {}: failed after {} attempts: {}", job.spec.job_id, job.spec.model_id,
                  job.spec.attempt, reason);
  } else {
    auto backoff = std::min(options_.max_backoff, options_.retry_backoff * (1 << std::clamp(job.spec.attempt - 1, 0, 16)));
    not_before_[job.spec.job_id] = std::chrono::steady_clock::now() + backoff;
    spdlog::warn("job {} model {}: {}; re-queued to resume from its checkpoint in {} ms", job.spec.job_id,
                 job.spec.model_id, reason, backoff.count());
  }
}

void Cluster::dispatch() {
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(suspect_until_, [&](const auto& entry) { return entry.second <= now; });
  std::vector<TrainerLoad> loads;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [address, t] : trainers_) {
      if (t.polled && !suspect_until_.contains(address)) {
        loads.push_back({address, t.view.capacity, t.view.running + t.view.queued});
      }
    }
  }
  for (const JobRecord& job : registry_.list()) {
    if (job.state != JobState::kQueued) continue;
    LogScope log_scope{{"job_id", job.spec.job_id}, {"model_id", job.spec.model_id}, {"request_id", job.request_id}};
    TrainerCallOptions calls = options_.calls;
    calls.request_id = job.request_id;
    if (auto wait = not_before_.find(job.spec.job_id); wait != not_before_.end()) {
      if (now < wait->second) continue;  // backing off after a lost attempt
      not_before_.erase(wait);
    }
    while (true) {
      auto choice = choose_trainer(loads);
      if (!choice) return;  // no free worker anywhere: the job waits, and so do later ones
      JobSpec spec = job.spec;
      spec.attempt = job.spec.attempt + 1;
      json body = to_json(spec);
      body["attempt"] = spec.attempt;
      LogScope trainer_scope{{"trainer", *choice}};
      TrainerReply reply = trainer_post(*choice, "/train", body, calls);
      auto load = std::find_if(loads.begin(), loads.end(), [&](const TrainerLoad& l) { return l.address == *choice; });
      if (reply.status == 202) {
        ++load->busy;
        registry_.update(
            job.spec.job_id,
            [&](JobRecord& j) {
              j.state = JobState::kRunning;
              j.trainer = *choice;
              j.spec.attempt = spec.attempt;
              j.error.clear();
              if (j.started_at == 0) j.started_at = unix_now();
            },
            true);
        spdlog::info("job {} model {}: dispatched to {} (attempt {})", job.spec.job_id, job.spec.model_id, *choice,
                     spec.attempt);
        break;
      }
      spdlog::warn("job {}: trainer {} refused it: {}", job.spec.job_id, *choice,
                   reply.status > 0 ? fmt::format("{} {}", reply.status, reply.body.dump()) : reply.transport_error);
      if (reply.status == 400) {
        registry_.update(
            job.spec.job_id,
            [&](JobRecord& j) {
              j.state = JobState::kFailed;
              j.error = fmt::format("rejected by trainer {}: {}", *choice,
                                    reply.body.is_object() ? reply.body["error"].value("message", "") : "");
              j.finished_at = unix_now();
            },
            true);
        break;
      }
      if (reply.status < 0) {
        suspect_until_[*choice] = std::chrono::steady_clock::now() + options_.suspect_for;
        spdlog::warn("trainer {}: no answer to a dispatch ({}); no dispatches to it for {} s", *choice,
                     reply.transport_error, options_.suspect_for.count() / 1000);
      }
      load->busy = load->capacity;  // do not try it again in this pass
    }
  }
}

}  // namespace mlswarm
