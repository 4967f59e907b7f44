#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mlswarm/job.h"

namespace mlswarm {

/// Every job the controller was given, persisted under HOME_DIR/controller/ as an
/// append-only journal (`jobs.jsonl`, one JSON job record per line, the last line of a job
/// wins) so that a restarted controller knows all jobs. Each append is fsynced before the
/// change is visible; a torn last line (a crash mid-write) is skipped on load. An append
/// that fails (a full disk, a short write) is cut back off the file, so the journal stays
/// whole records, and the change is not made: the caller gets Error(kUnavailable). The
/// journal is compacted (rewritten atomically) when it grows to several times the number of
/// jobs. Thread-safe: `write_mutex_` serialises changes and guards the journal file,
/// `journaled_at_` and `lines_`; `mutex_` guards `jobs_` and `order_` against readers and is
/// held only to apply a change already journaled, so a reader (GET /status) never waits for an
/// fsync. A writer may read `jobs_` under `write_mutex_` alone: only writers change it.
class JobRegistry {
 public:
  /// Loads the journal in `dir` (creating the folder). Throws Error(kInternal) when the
  /// folder cannot be created or the journal cannot be opened for appending.
  explicit JobRegistry(std::filesystem::path dir);
  ~JobRegistry();
  JobRegistry(const JobRegistry&) = delete;
  JobRegistry& operator=(const JobRegistry&) = delete;

  /// Records a new queued job; assigns job_id (and model_id) when missing.
  /// Throws Error(kConflict) for a job id in use, Error(kTooManyRequests) when `max_queued`
  /// jobs are already waiting, Error(kUnavailable) when the journal cannot be written.
  JobRecord create(JobSpec spec, std::size_t max_queued);

  std::optional<JobRecord> find(const std::string& job_id) const;
  /// All jobs, oldest first.
  std::vector<JobRecord> list() const;

  /// Applies `change` to the job and journals the result when `durable` (state, trainer or
  /// attempt changes) or when the last journal line for it is older than a few seconds.
  /// Returns the new record, or nullopt for an unknown job. Throws Error(kUnavailable) when
  /// the journal cannot be written (the job is then unchanged).
  std::optional<JobRecord> update(const std::string& job_id, const std::function<void(JobRecord&)>& change,
                                  bool durable);

  /// Compare-and-set: as update(), but only when `expected` holds for the job as it is now,
  /// checked under the same lock as the change. nullopt when the job is unknown or
  /// `expected` does not hold.
  std::optional<JobRecord> update_if(const std::string& job_id, const std::function<bool(const JobRecord&)>& expected,
                                     const std::function<void(JobRecord&)>& change, bool durable);

  std::size_t journal_lines() const;

 private:
  void load();
  void append(const JobRecord& job);  // mutex_ held
  void compact();                     // mutex_ held

  std::filesystem::path dir_;
  std::filesystem::path journal_path_;
  mutable std::mutex write_mutex_;
  mutable std::mutex mutex_;
  std::map<std::string, JobRecord> jobs_;
  std::vector<std::string> order_;
  std::map<std::string, double> journaled_at_;
  int journal_fd_ = -1;
  std::size_t lines_ = 0;
};

}  // namespace mlswarm
