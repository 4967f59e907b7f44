#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "batcher.h"
#include "mlswarm/model_meta.h"
#include "model_cache.h"

namespace mlswarm {

/// Serving: the models on HOME_DIR/models (ModelCache: loaded on first use, a new epoch loaded
/// and warmed off the request path, bounded by SERVE_MEMORY_MB) and their predictions (Batcher:
/// forward passes on its own threads, each model's batches tuned to PREDICT_P99_TARGET_MS).
/// Thread-safe. The interface holds no LibTorch type, so that only serving's own translation
/// units include it.
class ModelServer {
 public:
  /// `memory_bytes`: SERVE_MEMORY_MB in bytes (0: no bound).
  ModelServer(std::filesystem::path home_dir, BatchingOptions options, std::size_t memory_bytes = 0);
  ~ModelServer();

  /// Loads and warms these model versions (version 0: the latest) on a thread of its own, so
  /// that a replica serves them warm from its first request: what its deployments pin and
  /// SERVE_PRELOAD names. One that does not load is logged and skipped.
  void preload(std::vector<std::pair<std::string, int>> models);
  /// /readyz: why this replica is not ready to serve yet (models still warming), or nullopt.
  std::optional<std::string> not_ready() const;

  /// A model version as loaded now (loading or reloading it if needed), to read its meta and
  /// predict with, so that a request looks the model up once. Errors as meta().
  std::shared_ptr<const LoadedModel> model(const std::string& model_id, int version = 0);
  static const ModelMeta& meta_of(const LoadedModel& model);
  /// Classifies with a model that model() returned.
  PredictResult predict(std::shared_ptr<const LoadedModel> model, std::vector<float> pixels, std::int64_t count);

  /// The current meta of a model, loading (or reloading) it if needed.
  /// Throws Error(kNotFound) for an unknown model and Error(kDataError) for a corrupt one.
  /// `version` 0 is the latest; n > 0 the pinned version n (Error(kNotFound) once pruned).
  ModelMeta meta(const std::string& model_id, int version = 0);

  /// Models loaded so far (for /metrics and tests).
  std::size_t loads() const { return cache_.loads(); }

  struct Stats : Batcher::Stats {
    std::uint64_t loads = 0;    ///< model versions loaded
    std::uint64_t unloads = 0;  ///< dropped for SERVE_MEMORY_MB
    std::uint64_t loaded = 0;   ///< versions loaded now
    std::uint64_t bytes = 0;    ///< their weights
  };
  Stats stats() const;
  /// Each model's batch cap, wait and measured p99 (the tuner's), and the target.
  std::vector<ModelTuning> tuning() const { return batcher_.tuning(); }
  std::chrono::microseconds p99_target() const { return batcher_.p99_target(); }
  /// The most examples in one pass (PREDICT_MAX_BATCH, or its automatic value).
  int max_batch() const { return batcher_.max_batch(); }
  /// The most a batch's first request may wait (PREDICT_MAX_DELAY_US, or its automatic value).
  int max_delay_us() const { return static_cast<int>(batcher_.max_delay().count()); }
  /// Predictions waiting for a forward pass.
  std::size_t queued() const { return batcher_.queued(); }
  /// No new version waits to be loaded and warmed.
  bool settled() const { return cache_.settled(); }

 private:
  ModelCache cache_;
  Batcher batcher_;
  std::atomic<int> warming_{0};  ///< preload()'s models not yet warm
  std::atomic<bool> stopping_{false};
  std::thread preloader_;  ///< last: joined first, while the cache it reads from still stands
};

}  // namespace mlswarm
