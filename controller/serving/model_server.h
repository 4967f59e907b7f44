#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "batcher.h"
#include "mlswarm/model_meta.h"
#include "model_cache.h"

namespace mlswarm {

/// Serving: the models on HOME_DIR/models (ModelCache: loaded on first use, reloaded when a
/// trainer publishes a new epoch) and their predictions (Batcher: every forward pass on one
/// thread, requests for the same model batched together).
/// Thread-safe. The interface holds no LibTorch type, so that only serving's own translation
/// units include it.
class ModelServer {
 public:
  ModelServer(std::filesystem::path home_dir, BatchingOptions options);

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
    std::uint64_t loads = 0;  ///< model versions loaded
  };
  Stats stats() const;

 private:
  ModelCache cache_;
  Batcher batcher_;  ///< last: joined first, while the cache it reads from still stands
};

}  // namespace mlswarm
