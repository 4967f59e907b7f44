#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace mlswarm {

struct LoadedModel;

struct ModelCacheOptions {
  std::string device = "cpu";  ///< "auto", "cpu" or "cuda" (SERVE_DEVICE)
  /// meta.json is stat'ed at most once per `recheck` per model version, not on every request.
  std::chrono::milliseconds recheck{100};
  /// SERVE_MEMORY_MB in bytes: the weights kept loaded; 0: no bound.
  std::size_t memory_bytes = 0;
  /// The batch sizes a model is run at once before it serves (Batcher::warm_sizes); unset: 1.
  std::function<std::vector<int>(const std::string& model_id)> warm_sizes;
};

/// The models serving has loaded from HOME_DIR/models, by id (and pinned version).
///
/// Contract: a model is loaded on first use, by the cache's own thread while the request that
/// first asks for it waits (one load at a time, so two requests never read the same files
/// twice), run once at the batch sizes it will serve (warm_up), and kept. Every load runs on
/// that one thread: what a load allocates and frees stays in one malloc arena, reused by the next
/// load, instead of a few MB left resident in the arena of each HTTP thread that ever loaded a
/// model (glibc never shrinks a thread arena's top while the trim threshold is 1 GiB). When its meta.json changes (a
/// trainer finished another epoch) get() goes on answering the version it has while a thread
/// of the cache's own loads and warms the new one, off the request path; the new version
/// replaces it only then, and requests already holding the old one finish with it. meta.json
/// is stat'ed at most once per `recheck` per model version. A new version that fails to load
/// is logged once and the old one keeps serving. With a memory bound, loaded versions beyond it
/// are unloaded least recently used first, never one that a request holds (its only owner is
/// the cache) and never the one just loaded; a first load makes room for its checkpoint's size
/// before it begins, so that the bound holds while it loads too.
/// Loading and warming are the only LibTorch work outside the batcher's threads; a loaded model
/// is complete before any other thread can see it. Requests that wait for a load when the cache
/// stops get Error(kUnavailable).
/// Thread-safe: `mutex_` guards `models_`, the counters and the reload queue.
class ModelCache {
 public:
  /// Error(kInvalidArgument) for device "cuda" when LibTorch sees no CUDA device.
  explicit ModelCache(std::filesystem::path home_dir, ModelCacheOptions options = {});
  ~ModelCache();
  ModelCache(const ModelCache&) = delete;
  ModelCache& operator=(const ModelCache&) = delete;

  /// Throws Error(kNotFound) for an unknown model, Error(kInvalidArgument) for a symlinked
  /// one, Error(kDataError) for a corrupt one.
  /// `version` 0 is the latest (models/<id>/), n > 0 the pinned models/<id>/versions/<n>/.
  std::shared_ptr<const LoadedModel> get(const std::string& model_id, int version = 0);

  /// Sets where warm-up sizes come from (before the first get()).
  void set_warm_sizes(std::function<std::vector<int>(const std::string& model_id)> sizes);
  /// Stops the reloading thread (what it is loading finishes first). The destructor does it too;
  /// an owner whose warm-up sizes come from a member destroyed before this one calls it first.
  void stop();
  bool cuda() const { return cuda_; }

  /// True when no new version waits to be loaded or is being loaded (tests, readiness).
  bool settled() const;

  struct Stats {
    std::size_t loads = 0;    ///< model versions loaded so far
    std::size_t unloads = 0;  ///< dropped for the memory bound
    std::size_t loaded = 0;   ///< versions loaded now
    std::size_t bytes = 0;    ///< their weights
  };
  Stats stats() const;
  /// Model versions loaded so far.
  std::size_t loads() const { return stats().loads; }

 private:
  struct Entry {
    std::shared_ptr<const LoadedModel> model;
    std::chrono::steady_clock::time_point checked;  ///< when meta.json was last stat'ed
    std::chrono::steady_clock::time_point used;     ///< for the memory bound's order
    std::filesystem::file_time_type failed_mtime;   ///< a new meta.json whose load failed: not retried
    std::uintmax_t failed_size = 0;
  };
  struct Reload {
    std::string key, model_id;
    int version = 0;
  };
  struct LoadNow {  ///< a first load, which a request waits for
    std::function<std::shared_ptr<const LoadedModel>()> load;
    std::promise<std::shared_ptr<const LoadedModel>> result;
  };
  /// Runs `f` on the cache's thread (before any reload queued) and returns what it returned.
  std::shared_ptr<const LoadedModel> on_cache_thread(std::function<std::shared_ptr<const LoadedModel>()> f);
  /// On the cache's thread, with mutex_ held by `lock`: runs the first LoadNow queued (the lock
  /// released meanwhile); false when there is none (the lock still held).
  bool run_load_now(std::unique_lock<std::mutex>& lock);
  std::shared_ptr<const LoadedModel> fresh(const std::string& key);
  std::shared_ptr<const LoadedModel> load(const std::string& model_id, int version,
                                          std::filesystem::file_time_type mtime, std::uintmax_t size);
  /// Both under mutex_; they return how many versions were unloaded. After a load the caller
  /// gives the free memory back (outside the lock): what the load used and freed, and what the
  /// versions unloaded held.
  std::size_t insert(const std::string& key, std::shared_ptr<const LoadedModel> model,
                     std::chrono::steady_clock::time_point checked);
  /// Unloads least recently used versions no request holds, never `keep`, until the loaded
  /// bytes plus `incoming` (a version about to load: room is made first) are within the bound.
  std::size_t unload_over_bound(const std::string& keep, std::size_t incoming = 0);
  void reload_loop();

  std::filesystem::path home_dir_;
  ModelCacheOptions options_;
  bool cuda_ = false;  ///< models go to the GPU
  mutable std::mutex mutex_;
  std::map<std::string, Entry> models_;
  std::size_t loads_ = 0, unloads_ = 0, bytes_ = 0;
  std::deque<Reload> reloads_;
  std::deque<std::shared_ptr<LoadNow>> loads_now_;
  std::set<std::string> reloading_;  ///< keys queued or loading
  bool stopping_ = false;
  std::condition_variable reload_cv_;
  std::mutex load_mutex_;
  std::thread reloader_;
};

}  // namespace mlswarm
