#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "discovery.h"
#include "job_registry.h"
#include "mlswarm/job.h"
#include "planner.h"
#include "trainer_transport.h"

namespace mlswarm {

struct ClusterOptions {
  std::optional<Subnet> subnet;  ///< SUBNET_TRAIN; at least one of subnet and dns_name is set
  std::string dns_name;          ///< TRAIN_DNS, e.g. tasks.ml_train: a second discovery source
  ScanOptions scan;
  /// Replaces the subnet scan and DNS (tests); empty = the real discovery above.
  std::function<std::vector<DiscoveredTrainer>()> discover;
  std::chrono::milliseconds scan_interval{2000};
  std::chrono::milliseconds poll_interval{1000};
  int max_misses = 3;  ///< scan passes a trainer may miss before it is dropped
  PlannerOptions planner;
  std::size_t max_queued = 1000;
  /// A trainer that refused a dispatch or let it run into its deadline gets no dispatches for
  /// this long, so that one that accepts connections and never answers costs one deadline,
  /// not one per job.
  std::chrono::milliseconds suspect_for{30000};
  /// HOME_DIR: a dispatch never numbers an attempt below what a job's fence file records.
  std::filesystem::path home_dir;
  /// Whether this controller may act now (it leads, with a fresh lease); checked before every
  /// plan and every call to a trainer. Empty: always (a controller without replicas).
  std::function<bool()> may_act;
};

/// A trainer as /status shows it.
struct TrainerView {
  std::string address;
  bool trusted = true;
  bool suspect = false;  ///< gets no dispatches for a while (it refused or timed out on one)
  bool draining = false;
  int capacity = 0;
  int running = 0;
  int queued = 0;
  double last_seen = 0;  ///< last answer to discovery or /status (Unix seconds)
  int misses = 0;        ///< consecutive scan passes without an answer
};

/// Slots of trainers that take dispatches (trusted, neither suspect nor draining) that no
/// queued or running job takes (a job takes one per rank): what a sweep may start now.
int free_trainer_slots(const std::vector<TrainerView>& trainers, const std::vector<JobRecord>& jobs);

/// The cluster's control loop and the executor of its plans. Each tick: a discovery pass
/// when one is due (apply_discovery), a /status poll of every trusted trainer (concurrent;
/// replies parsed as untrusted input), then plan() and the actions carried out through the
/// TrainerTransport and the registry. Each phase catches and logs what goes wrong and the
/// loop carries on. Every registry change is a compare-and-set on the job's state and
/// attempt, so an action planned before a cancel (or any other change) changes nothing.
/// Thread-safe: `mutex_` guards `trainers_` and `scans_`; `wake_mutex_` guards
/// `wake_requested_`; the loop thread alone uses `not_before_` and `cancels_sent_`. The registry and the
/// transport are not owned and must outlive the cluster.
class Cluster {
 public:
  Cluster(JobRegistry& registry, TrainerTransport& transport, ClusterOptions options);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  /// Starts the loop thread with a fresh view of the trainers (a new leader learns them anew).
  void start();
  /// Stops and joins the loop thread. Idempotent.
  void stop();
  bool running() const { return thread_.joinable(); }

  std::vector<TrainerView> trainers() const;
  /// Records the job (queued) and wakes the loop. Throws what JobRegistry::create throws.
  JobRecord submit(JobSpec spec);
  /// Marks a queued or running job cancelled (compare-and-set: whatever the loop is doing
  /// with it, it stays cancelled) and wakes the loop, which tells its trainer to stop it.
  /// Throws Error(kNotFound) for an unknown id and Error(kConflict) for a finished job.
  JobRecord cancel(const std::string& job_id);
  /// Runs the loop's next tick now rather than at the next poll.
  void wake();
  /// Runs `hook` in every tick of the leader's loop, after the trainers' reports are taken in
  /// and before the plan (the sweeps' searcher: the jobs it submits are placed in the same
  /// tick). Set before start().
  void set_before_plan(std::function<void()> hook) { before_plan_ = std::move(hook); }
  /// nullopt when ready to train; otherwise why not.
  std::optional<std::string> not_ready_reason() const;
  int scans_completed() const;

 private:
  void loop(std::stop_token stop);
  void tick(bool scan_due);
  bool may_act() const;
  void scan();
  void poll();
  ClusterSnapshot snapshot() const;
  /// Carries out a plan; true when a dispatch failed (a re-plan may place the job elsewhere).
  bool execute(const std::vector<Action>& actions);
  bool run(const action::Dispatch& a);
  /// POST /train to every rank; false (the trainer that refused made suspect, the ranks that
  /// took it told to stop) unless all took it.
  bool send_ranks(const JobRecord& job, const std::vector<std::string>& trainers, int port);
  void run(const action::Adopt& a);
  void run(const action::Progress& a);
  void run(const action::Finish& a);
  void run(const action::Requeue& a);
  void run(const action::Cancel& a);
  void mark_suspect(const std::string& address, const std::string& why);
  std::string sources() const;  ///< where trainers are looked for, for messages

  JobRegistry& registry_;
  TrainerTransport& transport_;
  ClusterOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, TrainerState> trainers_;
  int scans_ = 0;
  std::mutex wake_mutex_;
  std::condition_variable_any wake_;
  bool wake_requested_ = false;
  std::map<std::string, SteadyClock::time_point> not_before_;
  /// Cancels sent to trainers ("trainer job attempt") and when: loop thread only.
  std::map<std::string, SteadyClock::time_point> cancels_sent_;
  std::function<void()> before_plan_;
  std::jthread thread_;
};

}  // namespace mlswarm
