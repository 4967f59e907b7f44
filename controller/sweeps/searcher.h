#pragma once

// The searcher: carries sweeps out on the leader, one pass per cluster tick, with every
// decision journaled (in the sweep's record of the job journal) before it acts. After a crash
// or a failover the next leader finds the decisions and the trials' jobs in the journal: a
// decision whose job is missing gets its job, and the next decision is computed from the same
// state, so no trial is lost, none runs twice and no decision is taken twice.

#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "job_registry.h"
#include "sweep_record.h"
#include "sweep_spec.h"

namespace mlswarm {

/// What the searcher does to the cluster (the Cluster's own calls in the controller; fakes in tests).
struct SearcherHooks {
  std::function<void(JobSpec)> submit;             ///< Cluster::submit; throws as it does
  std::function<void(const std::string&)> cancel;  ///< Cluster::cancel
  std::function<int()> free_slots;                 ///< trainer slots no queued or running job takes
};

/// The searcher's bounds (settings of the controller).
struct SearcherOptions {
  int max_live_sweeps = 16;  ///< MAX_LIVE_SWEEPS: sweeps running at once; more are refused (429)
  int max_trials = 256;      ///< MAX_SWEEP_TRIALS: trials of one sweep; more are refused (400)
};

/// Thread-safe: the routes call create/cancel/find/list on any thread, the cluster loop
/// tick(); each change is a compare-and-set on the sweep's journal record. The registry is not
/// owned and must outlive the searcher.
class SweepSearcher {
 public:
  SweepSearcher(JobRegistry& registry, std::filesystem::path home_dir, SearcherHooks hooks,
                SearcherOptions options = {});

  /// POST /sweeps: journals the sweep (its trials start on the next tick). Ids are one
  /// namespace: throws Error(kConflict) naming the clash when its id, or an id it will derive
  /// for a trial or a rung's job, is a job's, a model's, a sweep's or one another sweep
  /// derives; Error(kInvalidArgument) past max_trials, Error(kTooManyRequests) with
  /// max_live_sweeps running; Error(kUnavailable) when the journal cannot be written.
  nlohmann::json create(const SweepSpec& spec);
  /// The sweep that owns `id` (its own, a trial's or a rung job's id: sweep_claims), if any;
  /// POST /train refuses such ids.
  std::optional<std::string> claimant(const std::string& id) const;
  /// DELETE /sweeps/{id}: journals it cancelled, then cancels its queued and running trials.
  /// Throws Error(kNotFound), or Error(kConflict) for a sweep that already ended.
  nlohmann::json cancel(const std::string& sweep_id);
  /// GET /sweeps/{id} (sweep_view), nullopt when unknown.
  std::optional<nlohmann::json> find(const std::string& sweep_id) const;
  /// GET /sweeps: every sweep's view without its trials, oldest first.
  nlohmann::json list() const;

  /// How many sweeps are in each state (every state, zeros too), for /metrics.
  std::map<std::string, int> count_by_state() const;

  /// One pass over the sweeps (the leader's cluster loop): submit the jobs of journaled
  /// decisions that have none, journal the trials ASHA has stopped, take new decisions while
  /// trainer slots are free, publish the best trial's model when one is done, and cancel what
  /// is left of cancelled sweeps. Errors are logged per sweep; the next pass tries again.
  void tick();

 private:
  std::optional<JobRecord> job(const std::string& job_id) const { return registry_.find(job_id); }
  /// A sweep's record as journaled: its document and its decisions (one record each).
  SweepRecord record_of(const nlohmann::json& body) const;
  /// The compare-and-set every change of a sweep but a decision goes through: `change` sees
  /// the record as the journal has it and returns false to leave it.
  std::optional<SweepRecord> update(const std::string& id, const std::function<bool(SweepRecord&)>& change);
  void check_namespace(const SweepSpec& spec) const;
  void advance(SweepRecord record);
  void submit_missing(const SweepRecord& record);
  void journal_stops(SweepRecord& record, const std::vector<TrialView>& views);
  /// Journals `decision` as the record's next one (compare-and-set on the number of
  /// decisions); false when the record changed meanwhile (a cancel).
  bool journal(SweepRecord& record, const SweepDecision& decision);
  void finish(SweepRecord record, std::optional<int> best);
  /// Ends a running sweep in `state` (succeeded: its model published); one that ended already stays.
  void end(const std::string& sweep_id, SweepState state, const std::string& why);
  void fail(const std::string& sweep_id, const std::string& why);
  /// Copies the best trial's model to models/<sweep_id>; the reason when its files cannot be
  /// read (the sweep then fails); throws when the copy cannot be written (tried again next pass).
  std::optional<std::string> publish(const SweepRecord& record);
  void cancel_trials(const SweepRecord& record);
  /// The jobs of sweep `sweep_id`: a job of a trial's id that this searcher did not create
  /// for that sweep is none of its business.
  std::function<std::optional<JobRecord>(const std::string&)> finder(const std::string& sweep_id) const;

  JobRegistry& registry_;
  std::filesystem::path home_dir_;
  SearcherHooks hooks_;
  SearcherOptions options_;
};

}  // namespace mlswarm
