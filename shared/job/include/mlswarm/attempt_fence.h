#pragma once

#include <filesystem>
#include <functional>

namespace mlswarm {

/// The fence on a job's files: `HOME_DIR/jobs/<id>/attempt` holds the newest attempt that
/// started the job. Every check and every write it guards happen under an exclusive lock on
/// that file (flock: released by the kernel when a trainer dies, carried across nodes by
/// NFS), so the check and the write are one step: once attempt n+1 has claimed the job, no
/// write of attempt n can land, not even one that had passed its check a moment before.
/// Thread-safe (each call takes the lock afresh); the file is never a symlink.
class AttemptFence {
 public:
  /// `job_dir` is HOME_DIR/jobs/<id> (created when missing).
  AttemptFence(std::filesystem::path job_dir, int attempt);

  /// Records this attempt as the job's current one. Throws Error(kSuperseded) when a later
  /// attempt already has, Error(kInternal) on I/O failure.
  void claim() const;

  /// Starts this attempt: like claim(), but also refuses an attempt that already started
  /// (Error(kConflict)). The controller numbers every dispatch afresh, so only a replayed or
  /// duplicated dispatch meets its own attempt on file; a trainer's restart does not forget it.
  void start() const;

  /// Runs `write` under the lock after checking that no later attempt has claimed the job.
  /// Throws Error(kSuperseded) (and does not run `write`) when one has.
  void guarded(const std::function<void()>& write) const;

  /// The attempt recorded in `job_dir`, 0 when none (read under the lock).
  static int current(const std::filesystem::path& job_dir);

  int attempt() const { return attempt_; }

 private:
  std::filesystem::path job_dir_;
  int attempt_;
};

}  // namespace mlswarm
