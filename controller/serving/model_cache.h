#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace mlswarm {

struct LoadedModel;

/// The models serving has loaded from HOME_DIR/models, by id.
///
/// Contract: get() returns the model version that matches meta.json as it is now on disk.
/// A model is loaded on first use, on the request thread that first asks for it (one load at
/// a time, under `load_mutex_`, so two requests never read the same files twice), and kept;
/// when its meta.json changes (a trainer finished another epoch) the next get() loads the new
/// version, and requests already holding the old one finish with it. Loading is the only
/// LibTorch work that happens outside the batcher thread; it builds a fresh module that no
/// other thread can see until it is complete. meta.json is stat'ed at most once per
/// `recheck` per model version (100 ms by default), not on every request: a new epoch is
/// served at most that long after its files were written.
/// Thread-safe: `mutex_` guards `models_` and `loads_`.
class ModelCache {
 public:
  /// `device`: "auto", "cpu" or "cuda" (SERVE_DEVICE); Error(kInvalidArgument) for "cuda"
  /// when LibTorch sees no CUDA device.
  explicit ModelCache(std::filesystem::path home_dir, const std::string& device = "cpu",
                      std::chrono::milliseconds recheck = std::chrono::milliseconds(100));
  ~ModelCache();
  ModelCache(const ModelCache&) = delete;
  ModelCache& operator=(const ModelCache&) = delete;

  /// Throws Error(kNotFound) for an unknown model, Error(kInvalidArgument) for a symlinked
  /// one, Error(kDataError) for a corrupt one.
  /// `version` 0 is the latest (models/<id>/), n > 0 the pinned models/<id>/versions/<n>/.
  std::shared_ptr<const LoadedModel> get(const std::string& model_id, int version = 0);

  /// Model versions loaded so far.
  std::size_t loads() const;

 private:
  struct Entry {
    std::shared_ptr<const LoadedModel> model;
    std::chrono::steady_clock::time_point checked;  ///< when meta.json was last stat'ed
  };
  std::shared_ptr<const LoadedModel> fresh(const std::string& key) const;

  std::filesystem::path home_dir_;
  bool cuda_ = false;  ///< models go to the GPU
  std::chrono::milliseconds recheck_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> models_;
  std::size_t loads_ = 0;
  std::mutex load_mutex_;
};

}  // namespace mlswarm
