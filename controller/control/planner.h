#pragma once

// The controller's decisions as pure functions: from what it knows of the trainers and the
// jobs to a list of actions, with no network, no clock of its own and no side effects. The
// executor (Cluster) carries the actions out and may find some stale (a job cancelled
// meanwhile); every action names the attempt it was planned for, so a stale one changes
// nothing.

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "mlswarm/job.h"
#include "placement.h"
#include "trainer_transport.h"
#include "mlswarm/ports.h"

namespace mlswarm {

using SteadyClock = std::chrono::steady_clock;

/// What the controller knows of one trainer.
struct TrainerState {
  std::string address;   ///< "ip:port"
  bool trusted = true;   ///< proved it holds the cluster key (always true without a key)
  int misses = 0;        ///< discovery passes in a row without an answer
  double last_seen = 0;  ///< Unix seconds of the last answer to discovery or /status
  bool polled = false;   ///< its /status answered in this tick; `report` is that answer
  TrainerReport report;
  SteadyClock::time_point suspect_until{};  ///< no dispatches before this (a dispatch failed)
};

/// A host that answered discovery as a trainer.
struct DiscoveredTrainer {
  std::string address;
  bool trusted = true;
};

/// Applies one discovery pass to the table: found trainers are added or refreshed (misses
/// reset, trust as just proved); every other one counts a miss and is dropped at
/// `max_misses`. Returns the addresses dropped.
std::vector<std::string> apply_discovery(std::map<std::string, TrainerState>& table,
                                         const std::vector<DiscoveredTrainer>& found, int max_misses, double now_unix);

/// Data-parallel jobs meet at RDZV_PORT and the ports after it on their rank 0's host.
inline constexpr int kRendezvousPorts = 64;

struct PlannerOptions {
  int max_attempts = 5;                          ///< lost attempts of a job before it fails
  int rendezvous_port = kDefaultRendezvousPort;  ///< RDZV_PORT: the first rendezvous port of data-parallel jobs
  /// A job whose attempt was lost waits retry_backoff * 2^(lost attempts - 1), at most
  /// max_backoff, before its next dispatch, so that a job that kills its trainers does not
  /// take the cluster down in a loop. An interrupted job (its trainer shut down cleanly)
  /// goes again at once.
  std::chrono::milliseconds retry_backoff{1000};
  std::chrono::milliseconds max_backoff{30000};
};

/// Everything one plan is made from.
struct ClusterSnapshot {
  SteadyClock::time_point now;
  /// Whether enough discovery passes have run to call a running job's missing trainer lost
  /// (a freshly started controller has not seen every trainer yet).
  bool settled = true;
  std::vector<TrainerState> trainers;                         ///< by address
  std::vector<JobRecord> jobs;                                ///< the registry, oldest first
  std::map<std::string, SteadyClock::time_point> not_before;  ///< backing-off jobs
};

namespace action {
/// Number the job's next attempt and send it to these trainers (rank order; several for a
/// data-parallel job, which meets at `port` on rank 0's host).
struct Dispatch {
  std::string job_id;
  int attempt = 0;
  std::vector<std::string> trainers;
  int port = 0;
};
/// A queued job's current attempt turned up on a trainer (it accepted the dispatch after the
/// controller stopped waiting): it runs there.
struct Adopt {
  std::string job_id;
  int attempt = 0;
  std::string trainer;
  JobRecord report;
};
/// A running job's progress as its trainer reported it.
struct Progress {
  std::string job_id;
  int attempt = 0;
  JobRecord report;
};
/// The job ended: as its trainer reported, or the controller gave up on it.
struct Finish {
  std::string job_id;
  int attempt = 0;
  JobState state = JobState::kFailed;
  FailureCode failure = FailureCode::kNone;
  std::string error;
  std::optional<JobProgress> progress;  ///< the trainer's last report, when it reported the end
};
/// The job goes back to the queue to resume from its checkpoint.
struct Requeue {
  std::string job_id;
  int attempt = 0;
  std::string reason;
  bool lost = true;  ///< counts against max_attempts (an interrupted attempt does not)
  std::chrono::milliseconds backoff{0};
};
/// Tell a trainer to stop an attempt the registry no longer gives it.
struct Cancel {
  std::string trainer;
  std::string job_id;
  int attempt = 0;
  std::string reason;
};
}  // namespace action

using Action =
    std::variant<action::Dispatch, action::Adopt, action::Progress, action::Finish, action::Requeue, action::Cancel>;

/// Decides what the cluster does next. Pure: the same snapshot gives the same actions.
std::vector<Action> plan(const ClusterSnapshot& snapshot, const PlannerOptions& options);

}  // namespace mlswarm
