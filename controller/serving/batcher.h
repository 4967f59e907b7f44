#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mlswarm {

struct LoadedModel;

struct PredictResult {
  std::string model_id;
  int version = 0;
  std::vector<int> class_idxs;
  std::vector<std::string> class_tags;
  std::vector<std::vector<float>> probabilities;
};

struct BatchingOptions {
  /// Examples in one forward pass. 8: with a worker per core, 16 clients measured 1,799
  /// requests/s (median of 5 alternating rounds) with p99 15.0 ms, against 1,528 and 25.6 ms
  /// for one 2-thread worker with batches of up to 32 (docs/benchmarks.md).
  int max_batch = 8;
  /// How long the first request of a batch waits for company. 0 (the default) batches
  /// greedily: a forward pass takes whatever queued while the previous one ran, which on 2
  /// CPU cores measured 2,742 requests/s at 16 clients against 2,510 with 300 us and 2,273
  /// with 2 ms (bench/predict.sh).
  std::chrono::microseconds max_delay{0};
  int threads = 0;  ///< LibTorch intra-op threads per pass; 0 = the cores divided among the workers
  /// SERVE_DEVICE: "auto" (CUDA when LibTorch sees a GPU, else the CPU), "cpu" or "cuda".
  /// Models are moved there when loaded; each batch is copied there once and its answers back once.
  std::string device = "auto";
  /// Forward passes that may run at once, each on its own batcher thread (PREDICT_WORKERS);
  /// 0: one per core. With 2 workers of 1 thread each, 2 cores run two passes side by side
  /// instead of one pass whose OpenMP team spins at every barrier (docs/benchmarks.md). On a
  /// GPU, 1 worker and larger batches suit better.
  int workers = 0;
};

/// The dynamic batcher: requests for the same model that arrive together go through one
/// forward pass (up to `max_batch` examples; the first waits at most `max_delay` for others;
/// one of `max_batch` examples or more runs alone at once).
///
/// Contract: request threads only enqueue pixels and wait for their answer; every tensor
/// operation of a prediction (the copy into a batch, normalisation, the forward pass,
/// softmax) runs on a batcher thread (`workers` of them, each taking the next batch when it
/// is free), so the LibTorch threads serving the process are bounded instead of one team
/// per HTTP thread. The model a request names is already loaded
/// (ModelCache) and stays alive while the request is queued. The destructor answers what is
/// queued, then joins the threads; predict() after that throws Error(kUnavailable).
/// Thread-safe: `mutex_` guards `queue_` and `stopping_`.
class Batcher {
 public:
  explicit Batcher(BatchingOptions options);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  /// Classifies `count` examples of `model`, given as pixel intensities in 0..1, C*H*W
  /// floats each. Blocks until the batch with them has run.
  PredictResult predict(std::shared_ptr<const LoadedModel> model, std::vector<float> pixels, std::int64_t count);

  struct Stats {
    std::uint64_t batches = 0;   ///< forward passes
    std::uint64_t requests = 0;  ///< predict calls answered
    std::uint64_t examples = 0;
  };
  Stats stats() const;

 private:
  struct Pending;
  void run();
  std::vector<std::shared_ptr<Pending>> next_batch();  // the batcher thread; empty when stopping and drained

  BatchingOptions options_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Pending>> queue_;
  bool stopping_ = false;
  std::atomic<std::uint64_t> batches_{0}, requests_{0}, examples_{0};
  std::vector<std::thread> threads_;
};

}  // namespace mlswarm
