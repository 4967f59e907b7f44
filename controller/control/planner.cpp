#include "planner.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

namespace mlswarm {
namespace {

const JobRecord* reported(const TrainerState& trainer, const std::string& job_id) {
  for (const auto& job : trainer.report.jobs) {
    if (job.spec.job_id == job_id) return &job;
  }
  return nullptr;
}

bool active(JobState state) { return state == JobState::kQueued || state == JobState::kRunning; }

/// Every rank's trainer of a running job, rank order.
std::vector<std::string> ranks_of(const JobRecord& job) {
  return job.trainers.empty() ? std::vector<std::string>{job.trainer} : job.trainers;
}

std::string host_of(const std::string& address) { return address.substr(0, address.rfind(':')); }

class Planner {
 public:
  Planner(const ClusterSnapshot& s, const PlannerOptions& o) : s_(s), o_(o) {
    for (const auto& t : s_.trainers) trainers_[t.address] = &t;
    for (const auto& t : s_.trainers) {
      if (t.trusted && t.polled && !t.report.draining && t.suspect_until <= s_.now) {
        loads_.push_back({t.address, t.report.capacity, t.report.running + t.report.queued});
      }
    }
  }

  std::vector<Action> run() {
    bool placing = true;  // jobs are placed in order: one that does not fit holds back the rest
    for (const JobRecord& job : s_.jobs) {
      if (job.state == JobState::kRunning) {
        follow_running(job);
      } else if (job.state == JobState::kQueued) {
        if (adopt(job)) continue;
        if (placing) placing = try_dispatch(job);
      }
    }
    cancel_orphans();
    return std::move(actions_);
  }

 private:
  /// A running job: its trainers' reports decide (rank 0's for progress and the end; any
  /// rank lost, restarted or failed loses the attempt, and every rank stops with it).
  void follow_running(const JobRecord& job) {
    const auto ranks = ranks_of(job);
    std::vector<std::pair<const TrainerState*, const JobRecord*>> reports;
    for (std::size_t rank = 0; rank < ranks.size(); ++rank) {
      const std::string who = ranks.size() > 1 ? fmt::format("trainer {} (rank {})", ranks[rank], rank)
                                               : fmt::format("trainer {}", ranks[rank]);
      const auto it = trainers_.find(ranks[rank]);
      if (it == trainers_.end()) {
        if (s_.settled) lost(job, who + " lost");
        return;
      }
      const TrainerState& t = *it->second;
      if (!t.trusted) return lost(job, who + " no longer proves the cluster key");
      if (!t.polled) return;  // no news this tick
      const JobRecord* r = reported(t, job.spec.job_id);
      if (r == nullptr || r->spec.attempt != job.spec.attempt) {
        return lost(job, fmt::format("{} no longer runs attempt {}", who, job.spec.attempt));
      }
      reports.emplace_back(&t, r);
    }
    for (std::size_t rank = 1; rank < reports.size(); ++rank) {
      const auto& [t, r] = reports[rank];
      if (r->state == JobState::kFailed) return follow_report(job, *t, *r);  // a rank failed: the attempt did
    }
    follow_report(job, *reports.front().first, *reports.front().second);
  }

  void follow_report(const JobRecord& job, const TrainerState& t, const JobRecord& r) {
    const std::string& id = job.spec.job_id;
    const int attempt = job.spec.attempt;
    if (!is_terminal(r.state)) {
      actions_.push_back(action::Progress{id, attempt, r});
    } else if (r.state == JobState::kFailed && r.failure == FailureCode::kInterrupted) {
      // The trainer shut down cleanly (a rolling update) after a checkpoint: go on elsewhere now.
      actions_.push_back(action::Requeue{id, attempt, fmt::format("trainer {} shut down", t.address), false, {}});
    } else if (r.state == JobState::kFailed &&
               (r.failure == FailureCode::kSuperseded || r.failure == FailureCode::kLostPeer ||
                r.failure == FailureCode::kNoSpace)) {
      lost(job, fmt::format("trainer {}: {}", t.address, r.error));
    } else {
      actions_.push_back(action::Finish{id, attempt, r.state, r.failure, r.error, r.progress});
    }
  }

  /// The attempt is gone: queue the job again, or give up after max_attempts.
  void lost(const JobRecord& job, const std::string& reason) {
    const int lost = job.lost_attempts + 1;
    if (lost >= o_.max_attempts) {
      actions_.push_back(action::Finish{job.spec.job_id, job.spec.attempt, JobState::kFailed, FailureCode::kLostTrainer,
                                        fmt::format("gave up after {} lost attempts; last: {}", lost, reason),
                                        std::nullopt});
      return;
    }
    const auto backoff = std::min(o_.max_backoff, o_.retry_backoff * (1 << std::clamp(lost - 1, 0, 16)));
    actions_.push_back(action::Requeue{job.spec.job_id, job.spec.attempt, reason, true, backoff});
  }

  /// A queued job whose current attempt runs somewhere, or ended there: a trainer took a
  /// dispatch after the controller had stopped waiting for its answer (or the controller that
  /// sent it died before it recorded the answer). An attempt that ended is the job's end, as
  /// the running one would have been: no other attempt is dispatched for work already done
  /// (issue 38: a promoted trial succeeded twice, the second attempt adopting the first's model).
  bool adopt(const JobRecord& job) {
    if (job.spec.attempt == 0) return false;
    for (const auto& t : s_.trainers) {
      if (!t.trusted || !t.polled) continue;
      const JobRecord* r = reported(t, job.spec.job_id);
      // One rank of several cannot be adopted: its peers are not known to be there.
      if (r == nullptr || r->spec.attempt != job.spec.attempt || r->world_size != 1) continue;
      if (active(r->state)) {
        actions_.push_back(action::Adopt{job.spec.job_id, job.spec.attempt, t.address, *r});
        adopted_.insert(job.spec.job_id);
        return true;
      }
      if (ends_the_job(*r)) {
        actions_.push_back(
            action::Finish{job.spec.job_id, job.spec.attempt, r->state, r->failure, r->error, r->progress});
        return true;
      }
    }
    return false;
  }

  /// An attempt's end that is the job's (succeeded, or failed for a reason of its own), not a
  /// lost attempt to try again (interrupted, superseded, a lost peer, a full disk).
  static bool ends_the_job(const JobRecord& r) {
    if (r.state == JobState::kSucceeded) return true;
    return r.state == JobState::kFailed && r.failure != FailureCode::kInterrupted &&
           r.failure != FailureCode::kSuperseded && r.failure != FailureCode::kLostPeer &&
           r.failure != FailureCode::kNoSpace;
  }

  /// Places a queued job; false when it does not fit (it and the jobs after it wait).
  bool try_dispatch(const JobRecord& job) {
    // A job dispatched before (by this controller or the one before it) may have an attempt
    // running or ended on a trainer not polled yet: a fresh controller looks first.
    if (job.spec.attempt > 0 && !s_.settled) return true;
    if (auto wait = s_.not_before.find(job.spec.job_id); wait != s_.not_before.end() && s_.now < wait->second) {
      return true;  // backing off after a lost attempt; later jobs may go first
    }
    if (job.spec.attempt >= kMaxAttempt) {
      actions_.push_back(action::Finish{job.spec.job_id, job.spec.attempt, JobState::kFailed, FailureCode::kInternal,
                                        fmt::format("the job reached the highest attempt number, {}", kMaxAttempt),
                                        std::nullopt});
      return true;
    }
    std::vector<std::string> ranks = place_ranks(job);
    if (ranks.empty()) return false;
    const int port = ranks.size() > 1 ? rendezvous_port(job, host_of(ranks.front())) : 0;
    actions_.push_back(action::Dispatch{job.spec.job_id, job.spec.attempt + 1, std::move(ranks), port});
    return true;
  }

  /// Trainers for the job's ranks: `trainers` of them, or after a failure as many as have a
  /// free worker, down to `min_trainers`; none when that many are not free.
  std::vector<std::string> place_ranks(const JobRecord& job) {
    const int wanted = std::max(1, job.spec.trainers);
    const bool resumed = job.started_at > 0;  // it ran before: an elastic restart may use fewer
    const int least = resumed ? std::clamp(job.spec.min_trainers, 1, wanted) : wanted;
    // A trainer still holding an attempt of this job (or of its model) refuses another until
    // that one ends (a rank waiting on a lost peer ends at the trainer's DIST_TIMEOUT_MS): it is
    // no candidate, or every dispatch would fail a rank and leave the others waiting in turn.
    std::vector<TrainerLoad> eligible;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < loads_.size(); ++i) {
      if (holds(loads_[i].address, job.spec)) continue;
      eligible.push_back(loads_[i]);
      index.push_back(i);
    }
    int free = 0;
    for (const auto& l : eligible) free += l.capacity > l.busy ? 1 : 0;
    const int count = std::min(wanted, free);
    if (count < least) return {};
    auto ranks = place(eligible, count);
    for (std::size_t k = 0; k < eligible.size(); ++k) loads_[index[k]].busy = eligible[k].busy;
    return ranks;
  }

  /// Whether the trainer at `address` reports an active attempt of `spec`'s job or model.
  bool holds(const std::string& address, const JobSpec& spec) const {
    const auto it = trainers_.find(address);
    if (it == trainers_.end()) return false;
    return std::any_of(it->second->report.jobs.begin(), it->second->report.jobs.end(), [&](const JobRecord& r) {
      return !is_terminal(r.state) && (r.spec.job_id == spec.job_id || r.spec.model_id == spec.model_id);
    });
  }

  /// A rendezvous port on `host` that no other data-parallel job there uses now, and not the
  /// one this job's previous attempt used (a rank of it may still hold it).
  int rendezvous_port(const JobRecord& job, const std::string& host) const {
    std::set<int> taken{job.rendezvous_port};
    for (const auto& other : s_.jobs) {
      if (other.state == JobState::kRunning && other.rendezvous_port > 0 && !other.trainers.empty() &&
          host_of(other.trainers.front()) == host) {
        taken.insert(other.rendezvous_port);
      }
    }
    for (int offset = 0;; ++offset) {
      const int port = o_.rendezvous_port + offset % kRendezvousPorts;
      if (!taken.contains(port) || offset >= kRendezvousPorts) return port;
    }
  }

  /// Attempts that trainers still run but the registry gives to nobody, or to another attempt.
  void cancel_orphans() {
    std::map<std::string, const JobRecord*> jobs;
    for (const auto& j : s_.jobs) jobs[j.spec.job_id] = &j;
    for (const auto& t : s_.trainers) {
      if (!t.trusted || !t.polled) continue;
      for (const auto& r : t.report.jobs) {
        if (!active(r.state)) continue;
        const auto it = jobs.find(r.spec.job_id);
        if (it == jobs.end()) continue;  // not a job of this controller's
        const JobRecord& job = *it->second;
        std::string why;
        if (is_terminal(job.state)) {
          why = fmt::format("the job is {}", to_string(job.state));
        } else if (job.spec.attempt != r.spec.attempt) {
          why = fmt::format("attempt {} superseded by attempt {}", r.spec.attempt, job.spec.attempt);
        } else if (const auto ranks = ranks_of(job);
                   job.state == JobState::kRunning && std::find(ranks.begin(), ranks.end(), t.address) == ranks.end()) {
          why = fmt::format("attempt {} runs on {}", job.spec.attempt, job.trainer);
        } else if (job.state == JobState::kQueued && !adopted_.contains(job.spec.job_id)) {
          why = "the job is queued for another placement";
        }
        if (!why.empty()) actions_.push_back(action::Cancel{t.address, r.spec.job_id, r.spec.attempt, why});
      }
    }
  }

  const ClusterSnapshot& s_;
  const PlannerOptions& o_;
  std::map<std::string, const TrainerState*> trainers_;
  std::vector<TrainerLoad> loads_;
  std::set<std::string> adopted_;
  std::vector<Action> actions_;
};

}  // namespace

std::vector<std::string> apply_discovery(std::map<std::string, TrainerState>& table,
                                         const std::vector<DiscoveredTrainer>& found, int max_misses, double now_unix) {
  std::set<std::string> seen;
  for (const auto& d : found) {
    TrainerState& t = table[d.address];
    t.address = d.address;
    t.trusted = d.trusted;
    t.misses = 0;
    t.last_seen = now_unix;
    seen.insert(d.address);
  }
  std::vector<std::string> dropped;
  for (auto it = table.begin(); it != table.end();) {
    if (!seen.contains(it->first) && ++it->second.misses >= max_misses) {
      dropped.push_back(it->first);
      it = table.erase(it);
    } else {
      ++it;
    }
  }
  return dropped;
}

std::vector<Action> plan(const ClusterSnapshot& snapshot, const PlannerOptions& options) {
  return Planner(snapshot, options).run();
}

}  // namespace mlswarm
