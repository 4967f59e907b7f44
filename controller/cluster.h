#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "discovery.h"
#include "job_registry.h"
#include "mlswarm/job.h"
#include "trainer_client.h"

namespace mlswarm {

struct ClusterOptions {
  std::optional<Subnet> subnet;  ///< SUBNET_TRAIN; at least one of subnet and dns_name is set
  std::string dns_name;          ///< TRAIN_DNS, e.g. tasks.ml_train: a second discovery source
  ScanOptions scan;
  std::chrono::milliseconds scan_interval{2000};
  std::chrono::milliseconds poll_interval{1000};
  int max_misses = 3;     ///< scan passes a trainer may miss before it is dropped
  int max_attempts = 5;   ///< dispatches of one job before it fails
  /// A re-queued job waits retry_backoff * 2^(attempt-1), at most max_backoff, before its next
  /// dispatch, so that a job that kills its trainers does not take the cluster down in a loop.
  std::chrono::milliseconds retry_backoff{1000};
  std::chrono::milliseconds max_backoff{30000};
  std::size_t max_queued = 1000;
  /// A trainer that let a dispatch run into its deadline gets no dispatches for this long,
  /// so that one that accepts connections and never answers costs one deadline, not one per job.
  std::chrono::milliseconds suspect_for{30000};
  TrainerCallOptions calls;
};

/// A trainer as the controller sees it.
struct TrainerView {
  std::string address;
  int capacity = 0;
  int running = 0;
  int queued = 0;
  double last_seen = 0;  ///< last answer to discovery or /status (Unix seconds)
  int misses = 0;        ///< consecutive scan passes without an answer
};

/// The cluster's control loop: discovers trainers (scan passes), follows their /status,
/// dispatches queued jobs to the trainer with the most free capacity and re-dispatches jobs
/// whose trainer was lost or forgot them (the trainer resumes from the job's checkpoint).
/// Thread-safe: `mutex_` guards `trainers_`, `scans_`; `wake_mutex_` guards `wake_requested_`; the registry is thread-safe itself
/// and not owned (it must outlive the cluster). One loop thread does all network work.
class Cluster {
 public:
  Cluster(JobRegistry& registry, ClusterOptions options);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  void start();
  /// Stops and joins the loop thread. Idempotent.
  void stop();

  std::vector<TrainerView> trainers() const;
  /// Records the job (queued) and wakes the loop. Throws what JobRegistry::create throws.
  JobRecord submit(JobSpec spec);
  /// Cancels a queued job at once, a running one through its trainer.
  /// Throws Error(kNotFound) for an unknown id and Error(kConflict) for a finished job.
  JobRecord cancel(const std::string& job_id);
  /// nullopt when ready to train; otherwise why not.
  std::optional<std::string> not_ready_reason() const;
  int scans_completed() const;

 private:
  struct Trainer {
    TrainerView view;
    bool polled = false;  ///< /status answered in this tick
    std::map<std::string, JobRecord> jobs;  ///< as the trainer reported them
  };

  void loop(std::stop_token stop);
  void scan();
  void poll();
  void reconcile();
  void dispatch();
  void requeue(const JobRecord& job, const std::string& reason);
  std::string sources() const;  ///< where trainers are looked for, for messages

  JobRegistry& registry_;
  ClusterOptions options_;
  SubnetScanner scanner_;  ///< over the subnet, or 0.0.0.0/32 (never scanned) without one
  mutable std::mutex mutex_;
  std::mutex wake_mutex_;
  std::condition_variable_any wake_;
  bool wake_requested_ = false;  ///< guarded by wake_mutex_
  std::map<std::string, Trainer> trainers_;
  int scans_ = 0;
  /// Re-queued jobs and when they may be dispatched again. Only the loop thread uses it.
  std::map<std::string, std::chrono::steady_clock::time_point> not_before_;
  /// Trainers that timed out on a dispatch, and until when they get none. Loop thread only.
  std::map<std::string, std::chrono::steady_clock::time_point> suspect_until_;
  std::jthread thread_;
};

}  // namespace mlswarm
