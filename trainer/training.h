#pragma once

// The training loop's interface. No LibTorch here: the trainer's LibTorch translation units
// are those of trainer_training (trainer/training/); everything else includes this header only.

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "mlswarm/job.h"

namespace mlswarm {

class DatasetCache;

struct TrainingEnv {
  std::filesystem::path home_dir;
  DatasetCache* datasets = nullptr;  ///< not owned; must outlive the call
  /// How long a data-parallel rank waits for its peers (to join, or in a collective) before
  /// the job fails with lost_peer (DIST_TIMEOUT_MS).
  std::chrono::milliseconds dist_timeout{30000};
  /// Each epoch's weights also go to models/<id>/versions/<epoch>/; this many of the newest
  /// are kept (KEEP_VERSIONS), so clients can pin one.
  int keep_versions = 5;
  /// On a CUDA device: mixed precision (bf16 autocast over the forward pass and the loss; bf16
  /// needs no gradient scaler) and channels-last convolutions (single-trainer jobs: a
  /// data-parallel rank keeps NCHW, whose gradients are views into the allreduce buckets).
  /// Ignored on the CPU, where both are off. TRAIN_AMP; on by default.
  bool cuda_fast_path = true;
  /// On the CPU: channels-last convolutions (fp32) for conv nets trained by one trainer,
  /// 1.3x NCHW's speed on 2 cores (bench_train_throughput). TRAIN_CPU_CHANNELS_LAST; on by default.
  bool cpu_channels_last = true;
};

struct TrainingHooks {
  std::function<void(const JobProgress&)> report;  ///< called from the job's thread
  std::function<bool()> should_stop;               ///< polled at every batch boundary, in training and evaluation
};

enum class TrainingOutcome { kCompleted, kStopped };

/// Trains `spec` to the end or until should_stop() (then it writes a checkpoint at that
/// batch boundary and returns kStopped; a stop between two batches of an epoch's evaluation
/// keeps the trained epoch, whose evaluation runs again on resume). After every epoch it
/// evaluates on the test split and writes model.pt, meta.json and checkpoint.pt atomically.
/// When the job's checkpoint exists it resumes from it. Throws Error for a missing or corrupt
/// dataset, an unavailable device or any LibTorch failure (turned into kDataError/
/// kInvalidArgument/kInternal with a readable message).
/// With a placement of several ranks (a data-parallel job) it first joins its peers; every
/// rank starts from rank 0's state, takes its share of every global batch, and the gradients
/// are summed over the ranks before each step; each rank evaluates its shard of the test
/// split (the sums are added up) and rank 0 alone writes files. A stop asked of any rank stops
/// all of them after the same training step. A peer lost in a collective is Error(kLostPeer).
TrainingOutcome run_training(const JobSpec& spec, const TrainingEnv& env, const TrainingHooks& hooks);

/// Sets LibTorch's intra-op thread count for the process (0: one per core).
void set_training_threads(int threads);
/// "cuda" when LibTorch was built with CUDA and sees a device, else "cpu".
std::string best_device();

/// The benchmark's ceiling: the same model and optimiser stepping `steps` times on one
/// batch that stays resident on the device. Returns images/s.
double resident_batch_images_per_s(const JobSpec& spec, const TrainingEnv& env, int steps);

/// Runs the resume path on sealed checkpoint bytes (unseal, archive, state, weights and
/// optimiser into a fresh CPU model for `spec`) and returns the epoch it would resume at,
/// or nullopt when the bytes are not a usable checkpoint for `spec`. For the fuzz target
/// and tools; never throws.
std::optional<int> checkpoint_resume_epoch(std::string_view sealed, const JobSpec& spec);

/// The sealed bytes of a checkpoint of an untrained model for `spec` that resumes at
/// `next_epoch`: what a trainer writes, for the fuzz seed corpus and tests.
std::string fresh_checkpoint(const JobSpec& spec, int next_epoch);

}  // namespace mlswarm
