#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mlswarm/job.h"
#include "mlswarm/message_queue.h"

namespace mlswarm {

/// One message from a job (or the runner) to the status board.
struct JobUpdate {
  enum class Kind { kSubmitted, kStarted, kProgress, kFinished };
  Kind kind = Kind::kProgress;
  std::string job_id;
  JobRecord record;      ///< kSubmitted: the whole new record
  JobProgress progress;  ///< kProgress
  // kFinished
  JobState state = JobState::kSucceeded;
  FailureCode failure = FailureCode::kNone;
  std::string error;
  double at = 0;  ///< when it happened (Unix seconds)
};

/// The trainer's job table. Job threads never touch it: they post JobUpdates, and one
/// board thread applies them in order. Readers get copies.
/// Thread-safe: post(), wait_applied(), snapshot() and find() may be called from any thread;
/// `mutex_` guards `jobs_`, `applied_` and `stopped_`.
class StatusBoard {
 public:
  /// `max_finished`: finished jobs kept for /status; the oldest are forgotten first.
  explicit StatusBoard(std::size_t max_finished = 200);
  ~StatusBoard();
  StatusBoard(const StatusBoard&) = delete;
  StatusBoard& operator=(const StatusBoard&) = delete;

  /// Queues an update; returns its sequence number (0 after stop()).
  std::uint64_t post(JobUpdate update);
  /// Blocks until the update with sequence number `seq` has been applied.
  void wait_applied(std::uint64_t seq);
  /// post() then wait_applied(): for callers that must read their own write.
  void post_and_wait(JobUpdate update);
  /// Waits until every update posted so far has been applied.
  void flush();

  std::vector<JobRecord> snapshot() const;
  std::optional<JobRecord> find(const std::string& job_id) const;

  /// Applies what is queued, then joins the board thread. Idempotent.
  void stop();

 private:
  void run();
  void apply(const JobUpdate& update);

  MessageQueue<JobUpdate> queue_;
  std::size_t max_finished_;
  mutable std::mutex mutex_;
  std::condition_variable applied_cv_;
  std::map<std::string, JobRecord> jobs_;
  std::uint64_t applied_ = 0;
  bool stopped_ = false;
  std::jthread thread_;
};

}  // namespace mlswarm
