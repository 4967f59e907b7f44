#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "mlswarm/model_meta.h"

namespace mlswarm {

struct PredictResult {
  std::string model_id;
  int version = 0;
  std::vector<int> class_idxs;
  std::vector<std::string> class_tags;
  std::vector<std::vector<float>> probabilities;
};

struct BatchingOptions {
  int max_batch = 32;  ///< examples in one forward pass
  /// How long the first request of a batch waits for company. 0 (the default) batches
  /// greedily: a forward pass takes whatever queued while the previous one ran, which
  /// on 2 CPU cores measured 2,742 requests/s at 16 clients against 2,510 with 300 us
  /// and 2,273 with 2 ms (bench/predict.sh).
  std::chrono::microseconds max_delay{0};
  int threads = 0;                           ///< LibTorch intra-op threads, 0 = one per core
};

/// Serves predictions from HOME_DIR/models. A model is loaded on first use and kept; when
/// its meta.json changes on disk (a trainer finished another epoch) the next request loads
/// the new weights, without a restart. Requests for the same model that arrive together
/// are batched into one forward pass (a dynamic batcher: up to `max_batch` examples, the
/// first waiting at most `max_delay` for others); a request of `max_batch` examples or
/// more runs alone at once.
/// Thread-safe; one batcher thread, joined by the destructor. The interface holds no
/// LibTorch type, so that only model_server.cpp includes it.
class ModelServer {
 public:
  ModelServer(std::filesystem::path home_dir, BatchingOptions options);
  ~ModelServer();
  ModelServer(const ModelServer&) = delete;
  ModelServer& operator=(const ModelServer&) = delete;

  /// The current meta of a model, loading (or reloading) it if needed.
  /// Throws Error(kNotFound) for an unknown model and Error(kDataError) for a corrupt one.
  ModelMeta meta(const std::string& model_id);

  /// Classifies `count` examples, given as pixel intensities in 0..1, C*H*W floats each in
  /// the model's input shape (the caller checks the shape against meta()).
  PredictResult predict(const std::string& model_id, std::vector<float> pixels, std::int64_t count);

  /// Models loaded so far (for /metrics and tests).
  std::size_t loads() const;

  struct Stats {
    std::uint64_t loads = 0;
    std::uint64_t batches = 0;   ///< forward passes
    std::uint64_t requests = 0;  ///< predict calls answered
    std::uint64_t examples = 0;
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlswarm
