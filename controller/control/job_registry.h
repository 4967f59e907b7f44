#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
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
  /// Loads the journal in `dir` (creating the folder). A `writer` (the only controller, as in
  /// tests and tools) compacts it and opens it for appending at once; a replica that may
  /// follow reads it, and writes only after start_writing(). Throws Error(kInternal) when the
  /// folder cannot be created or the journal cannot be opened for appending.
  explicit JobRegistry(std::filesystem::path dir, bool writer = true);

  /// Every append (and compaction) then runs inside `fence`, which runs it only while this
  /// controller leads (Leadership::fenced), and each record carries `term()`. An append that
  /// the fence refuses changes nothing and throws Error(kUnavailable).
  void set_fence(std::function<bool(const std::function<void()>&)> fence, std::function<std::uint64_t()> term);

  /// A follower: reads what the leader appended since the last read (the whole journal again
  /// when it was compacted into a new file). A record of a lower term than one already read
  /// is a stale leader's: ignored, unless it creates a job not seen before (kept: its client
  /// got 202).
  void refresh();
  /// This controller leads now: reads the rest of the journal, compacts it, appends from here.
  void start_writing();
  /// It follows again: no more appends.
  void stop_writing();
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

  /// Records of another kind kept in the same journal (a sweep's searcher state, kind
  /// "sweep"): written, fenced, replayed, refreshed by followers and compacted as jobs are; the
  /// last line of a (kind, id) wins, and a stale leader's line about a known one is ignored.
  /// Throws Error(kConflict) when it exists, Error(kUnavailable) when the journal cannot be written.
  void create_document(const std::string& kind, const std::string& id, const nlohmann::json& body);
  /// Applies `change` to a copy and journals it when `change` returns true. Returns the record
  /// as it is afterwards, or nullopt when unknown. Throws Error(kUnavailable) as create does
  /// (the record is then unchanged).
  std::optional<nlohmann::json> update_document(const std::string& kind, const std::string& id,
                                                const std::function<bool(nlohmann::json&)>& change);
  std::optional<nlohmann::json> find_document(const std::string& kind, const std::string& id) const;
  /// Every record of `kind`, oldest first.
  std::vector<nlohmann::json> documents(const std::string& kind) const;
  /// A number that changes whenever any document changes (created, updated, read from the
  /// journal): a reader that caches documents compares it instead of re-reading them.
  std::uint64_t documents_generation() const { return documents_generation_.load(); }

  std::size_t journal_lines() const;

  /// The highest term in the journal as last read (a follower's refresh() runs every election
  /// tick): a new leader's term must exceed it (Leadership::set_term_floor).
  std::uint64_t max_term() const;

 private:
  void read_journal();  // write_mutex_ held: from read_offset_, or from the start of a new file
  void apply(JobRecord job, std::uint64_t term);  // write_mutex_ held
  void append(const JobRecord& job);              // write_mutex_ held; through the fence
  /// A line of the journal (a job's or a document's), through the fence. write_mutex_ held.
  void append_line(const nlohmann::json& record);
  void write_line(nlohmann::json record);                               // write_mutex_ held; the fence held
  void apply_document(const nlohmann::json& line, std::uint64_t term);  // write_mutex_ held
  void compact();                                                       // write_mutex_ held; the fence held

  std::filesystem::path dir_;
  std::filesystem::path journal_path_;
  mutable std::mutex write_mutex_;
  mutable std::mutex mutex_;
  std::map<std::string, JobRecord> jobs_;
  std::vector<std::string> order_;
  /// Documents by "kind/id" (their kind and id are in the line), and in order of creation.
  std::map<std::string, nlohmann::json> documents_;
  std::atomic<std::uint64_t> documents_generation_{0};
  std::vector<std::string> document_order_;
  std::map<std::string, double> journaled_at_;
  int journal_fd_ = -1;
  std::size_t lines_ = 0;
  off_t read_offset_ = 0;       ///< how far the journal has been read (whole lines)
  ino_t journal_inode_ = 0;     ///< of the file read so far: compaction makes a new one
  std::uint64_t max_term_ = 0;  ///< the highest term read or written
  std::function<bool(const std::function<void()>&)> fence_;
  std::function<std::uint64_t()> term_;
};

}  // namespace mlswarm
