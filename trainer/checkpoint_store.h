#pragma once

// A job's files on HOME_DIR, as one attempt of the job sees them. No LibTorch here: the
// store deals in payload bytes; what is inside them is the training loop's business.

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "mlswarm/attempt_fence.h"

namespace mlswarm {

/// The checkpoints of one job, written by one attempt of it:
/// `HOME_DIR/jobs/<id>/checkpoint.pt`, with the one before kept as `checkpoint.prev.pt`, both
/// sealed (length and CRC-32, see mlswarm/atomic_file.h) and written atomically; and the job's
/// attempt fence (`jobs/<id>/attempt`, see mlswarm/attempt_fence.h).
///
/// The contract:
/// - claim() first: it records this attempt as the job's current one, or throws
///   Error(kSuperseded) when a later attempt already started.
/// - Every write goes through save() or publish(), which run under the fence: once a later
///   attempt has claimed the job, they throw Error(kSuperseded) and write nothing.
/// - A crash at any point leaves at least one complete checkpoint: checkpoint.pt is replaced
///   only after the old one was moved to checkpoint.prev.pt.
/// - resume() offers the newest intact checkpoint first (checkpoint.pt, else
///   checkpoint.prev.pt); symlinks and files that fail their seal are skipped.
/// Thread-compatible: one attempt uses its store from its one job thread.
class CheckpointStore {
 public:
  /// `job_dir` is HOME_DIR/jobs/<id> (mlswarm::job_dir makes it safely).
  CheckpointStore(std::filesystem::path job_dir, int attempt);

  void claim() const;

  /// Replaces checkpoint.pt with `payload` (sealed), keeping the old one as checkpoint.prev.pt.
  void save(std::string_view payload) const;

  /// Runs `write_model` (model.pt and meta.json) and then saves `checkpoint`, both under the
  /// fence, so the model and the checkpoint after an epoch land together or not at all.
  void publish(const std::function<void()>& write_model, std::string_view checkpoint) const;

  /// Runs `write` under the fence (Error(kSuperseded) and nothing written when a later attempt
  /// has claimed the job).
  void guarded(const std::function<void()>& write) const;

  /// Offers each intact checkpoint, newest first, to `use` with its unsealed payload and a
  /// name for messages, until `use` accepts one (returns true). `use` returns false to pass
  /// (a checkpoint of another spec) or throws to say the payload is unusable (logged); either
  /// way the next one is offered. Returns whether one was accepted.
  bool resume(const std::function<bool(const std::string& payload, const std::string& what)>& use) const;

  const std::filesystem::path& checkpoint_path() const { return checkpoint_; }

 private:
  /// The unsealed payload of `path`, or nullopt (missing, a symlink, torn, corrupt: logged).
  std::optional<std::string> read(const std::filesystem::path& path) const;
  void write(std::string_view payload) const;  // the fence held

  AttemptFence fence_;
  std::filesystem::path checkpoint_;
  std::filesystem::path previous_;
};

}  // namespace mlswarm
