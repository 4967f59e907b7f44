#include "job_runner.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/log.h"

namespace mlswarm {

JobRunner::JobRunner(StatusBoard& board, TrainFunction train, JobRunnerOptions options)
    : board_(board), train_(std::move(train)), options_(std::move(options)) {
  if (options_.workers < 1) options_.workers = 1;
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
}

JobRunner::~JobRunner() { shutdown(); }

JobRecord JobRunner::submit(JobSpec spec) {
  if (spec.job_id.empty()) spec.job_id = make_id("job");
  if (spec.model_id.empty()) spec.model_id = spec.job_id;
  JobRecord record;
  record.spec = spec;
  record.state = JobState::kQueued;
  record.trainer = options_.trainer_address;
  if (spec.placement) {
    record.rank = spec.placement->rank;
    record.world_size = spec.placement->world_size;
  }
  record.created_at = unix_now();
  record.updated_at = record.created_at;
  record.request_id = log_field("request_id");
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw Error(ErrorCode::kUnavailable, "the trainer is shutting down");
    if (active_.contains(spec.job_id)) {
      throw Error(ErrorCode::kConflict, fmt::format("job {} is already queued or running here", spec.job_id), "job_id");
    }
    for (const auto& [id, control] : active_) {
      if (control->spec.model_id == spec.model_id) {
        throw Error(ErrorCode::kConflict, fmt::format("model {} is already being trained by job {}", spec.model_id, id),
                    "model_id");
      }
    }
    if (pending_.size() >= options_.max_pending) {
      throw Error(ErrorCode::kTooManyRequests,
                  fmt::format("{} jobs are already waiting; try again later", pending_.size()));
    }
    auto control = std::make_shared<Control>();
    control->spec = spec;
    control->request_id = record.request_id;
    JobUpdate update;
    update.kind = JobUpdate::Kind::kSubmitted;
    update.job_id = spec.job_id;
    update.record = record;
    board_.post_and_wait(std::move(update));
    spdlog::info("job {} model {}: queued ({} {} epochs, attempt {})", spec.job_id, spec.model_id, spec.dataset,
                 spec.train_opts.epochs, spec.attempt);
    active_[spec.job_id] = control;
    pending_.push_back(std::move(control));
  }
  wake_.notify_one();
  return record;
}

JobRecord JobRunner::cancel(const std::string& job_id, std::optional<int> attempt) {
  std::shared_ptr<Control> control;
  {
    std::lock_guard lock(mutex_);
    auto it = active_.find(job_id);
    if (it != active_.end() && attempt && it->second->spec.attempt != *attempt) {
      throw Error(
          ErrorCode::kConflict,
          fmt::format("job {} runs attempt {} here, not attempt {}", job_id, it->second->spec.attempt, *attempt),
          "attempt");
    }
    if (it != active_.end()) {
      control = it->second;
      if (!control->running) {
        std::erase(pending_, control);
        active_.erase(it);
        JobUpdate update;
        update.kind = JobUpdate::Kind::kFinished;
        update.job_id = job_id;
        update.state = JobState::kCancelled;
        update.error = "cancelled before it started";
        board_.post_and_wait(std::move(update));
        spdlog::info("job {} model {}: cancelled while queued", job_id, control->spec.model_id);
      } else if (!control->cancel.exchange(true)) {
        spdlog::info("job {} model {}: cancel requested", job_id, control->spec.model_id);
      }
    }
  }
  auto record = board_.find(job_id);
  if (!record) throw Error(ErrorCode::kNotFound, fmt::format("unknown job '{}'", job_id), "job_id");
  if (!control) {
    throw Error(ErrorCode::kConflict, fmt::format("job {} already ended {}", job_id, to_string(record->state)),
                "job_id");
  }
  return *record;
}

std::size_t JobRunner::active_count() const {
  std::lock_guard lock(mutex_);
  return active_.size();
}

void JobRunner::shutdown() {
  std::vector<std::shared_ptr<Control>> dropped;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    shutdown_ = true;
    dropped.assign(pending_.begin(), pending_.end());
    pending_.clear();
    for (const auto& control : dropped) active_.erase(control->spec.job_id);
  }
  wake_.notify_all();
  for (const auto& control : dropped) {
    JobUpdate update;
    update.kind = JobUpdate::Kind::kFinished;
    update.job_id = control->spec.job_id;
    update.state = JobState::kFailed;
    update.failure = FailureCode::kInterrupted;
    update.error = "interrupted: the trainer shut down before the job started";
    board_.post(std::move(update));
  }
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
}

void JobRunner::work() {
  while (true) {
    std::shared_ptr<Control> control;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      control = pending_.front();
      pending_.pop_front();
      control->running = true;
    }
    run_job(control);
    std::lock_guard lock(mutex_);
    active_.erase(control->spec.job_id);
  }
}

void JobRunner::run_job(const std::shared_ptr<Control>& control) {
  const JobSpec& spec = control->spec;
  LogScope log_scope{{"job_id", spec.job_id}, {"model_id", spec.model_id}, {"request_id", control->request_id}};
  JobUpdate started;
  started.kind = JobUpdate::Kind::kStarted;
  started.job_id = spec.job_id;
  board_.post(std::move(started));
  spdlog::info("job {} model {}: started", spec.job_id, spec.model_id);

  TrainingHooks hooks;
  hooks.should_stop = [this, &control] { return control->cancel.load() || shutdown_.load(); };
  hooks.report = [this, &spec](const JobProgress& p) {
    JobUpdate update;
    update.kind = JobUpdate::Kind::kProgress;
    update.job_id = spec.job_id;
    update.progress = p;
    board_.post(std::move(update));
  };

  JobUpdate finished;
  finished.kind = JobUpdate::Kind::kFinished;
  finished.job_id = spec.job_id;
  try {
    TrainingOutcome outcome = train_(spec, hooks);
    if (outcome == TrainingOutcome::kCompleted) {
      finished.state = JobState::kSucceeded;
    } else if (control->cancel) {
      finished.state = JobState::kCancelled;
      finished.error = "cancelled";
    } else {
      finished.state = JobState::kFailed;
      finished.failure = FailureCode::kInterrupted;
      finished.error = "interrupted: the trainer shut down; the job's checkpoint is written";
    }
  } catch (const Error& e) {
    finished.state = JobState::kFailed;
    finished.failure = failure_for(e.code());
    finished.error = e.what();
  } catch (const std::bad_alloc&) {
    finished.state = JobState::kFailed;
    finished.failure = FailureCode::kOutOfMemory;
    finished.error = "out of memory";
  } catch (const std::exception& e) {
    finished.state = JobState::kFailed;
    finished.failure = FailureCode::kInternal;
    finished.error = fmt::format("unexpected error: {}", e.what());
  }
  if (finished.state == JobState::kFailed) {
    spdlog::error("job {} model {}: failed: {}", spec.job_id, spec.model_id, finished.error);
  } else {
    spdlog::info("job {} model {}: {}", spec.job_id, spec.model_id, to_string(finished.state));
  }
  board_.post(std::move(finished));
}

}  // namespace mlswarm
