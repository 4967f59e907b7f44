#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mlswarm/job.h"
#include "status_board.h"
#include "training.h"

namespace mlswarm {

/// Runs one job to the end. Tests pass a fake; the daemon passes run_training.
using TrainFunction = std::function<TrainingOutcome(const JobSpec&, const TrainingHooks&)>;

struct JobRunnerOptions {
  int workers = 1;                ///< jobs that run at once
  std::size_t max_pending = 256;  ///< jobs waiting beyond that get kTooManyRequests
  std::string trainer_address;    ///< reported in every job record
};

/// A pool of worker threads that take jobs in submission order.
/// Reports every change only through the StatusBoard's queue.
/// Thread-safe: `mutex_` guards `pending_`, `active_` and `stopping_`.
/// `board` is not owned and must outlive the runner.
class JobRunner {
 public:
  JobRunner(StatusBoard& board, TrainFunction train, JobRunnerOptions options);
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  /// Queues a job; assigns a job id (and the model id) when missing. Throws Error:
  /// kConflict when the job id or its model id is already queued or running here,
  /// kTooManyRequests when the pending queue is full, kUnavailable while shutting down.
  JobRecord submit(JobSpec spec);

  /// Cancels a queued job at once, a running one at its next batch boundary. With
  /// `attempt`, only that attempt of the job (the controller stops stale attempts so).
  /// Throws Error(kNotFound) for an unknown id, Error(kConflict) for a finished job or
  /// another attempt.
  JobRecord cancel(const std::string& job_id, std::optional<int> attempt = std::nullopt);

  int capacity() const { return options_.workers; }
  /// Jobs queued or running.
  std::size_t active_count() const;

  /// Stops taking jobs, asks running jobs to stop at their next batch boundary (they write
  /// a checkpoint), and joins the workers. Idempotent.
  void shutdown();

 private:
  struct Control {
    JobSpec spec;
    std::string request_id;  ///< of the POST /train that queued it, for the job's log lines
    std::atomic<bool> cancel{false};
    bool running = false;
  };

  void work();
  void run_job(const std::shared_ptr<Control>& control);

  StatusBoard& board_;
  TrainFunction train_;
  JobRunnerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Control>> pending_;
  std::map<std::string, std::shared_ptr<Control>> active_;  ///< queued or running, by job id
  bool stopping_ = false;
  std::atomic<bool> shutdown_{false};
  std::vector<std::jthread> workers_;
};

}  // namespace mlswarm
