#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "batch_tuner.h"

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
  /// The most examples in one forward pass (PREDICT_MAX_BATCH): a bound, the tuner picks the
  /// cap below it. 0: 64 on the CPU, 1024 on a GPU.
  int max_batch = 0;
  /// The most the first request of a batch may wait for company (PREDICT_MAX_DELAY_US): a
  /// bound, the tuner waits only where waiting fills batches. -1: none on the CPU (where
  /// greedy batching measured best: a pass takes what queued during the one before), 2 ms on a
  /// GPU.
  std::chrono::microseconds max_delay{-1};
  int threads = 0;  ///< LibTorch intra-op threads per pass; 0 = the cores divided among the workers
  /// SERVE_DEVICE: "auto" (CUDA when LibTorch sees a GPU), "cpu" or "cuda".
  /// Models are moved there when loaded; each batch is copied there once and its answers back once.
  std::string device = "auto";
  /// Forward passes that may run at once, each on its own batcher thread (PREDICT_WORKERS);
  /// 0: one per core on the CPU (2 workers of 1 thread each run two passes side by side instead
  /// of one pass whose OpenMP team spins at every barrier, docs/benchmarks.md), 2 on a GPU.
  int workers = 0;
  /// PREDICT_P99_TARGET_MS: the p99 of a request's time in the batcher that each model's batch
  /// cap and wait are tuned to (BatchTuner).
  std::chrono::microseconds p99_target{std::chrono::milliseconds(10)};
  /// How long after its last request a model still counts as active, and so keeps its share of
  /// the workers (a model with a closed loop of clients asks again well within it).
  std::chrono::milliseconds active_window{100};
};

/// One model's tuning as the batcher sees it now (for /metrics and the dashboard).
struct ModelTuning {
  std::string model_id;
  int batch = 0;                      ///< the cap the tuner chose
  std::chrono::microseconds wait{0};  ///< the wait it chose
  std::chrono::microseconds p99{0};   ///< measured in its last window: time in the batcher
  std::chrono::microseconds pass_p99{0};
  double mean_batch = 0;
  std::uint64_t window_requests = 0;  ///< in its last window (0: none judged yet)
  std::uint64_t requests = 0;         ///< answered, all windows
};

/// The dynamic batcher: requests for the same model version that arrive together go through
/// one forward pass, each model's passes sized by its own BatchTuner to the latency target.
///
/// Contract: request threads only enqueue pixels and wait for their answer; every tensor
/// operation of a prediction (the copy into a batch, normalisation, the forward pass,
/// softmax) runs on a batcher thread (`workers` of them), so the LibTorch threads serving the
/// process are bounded instead of one team per HTTP thread. Each model version has its own
/// queue, and the workers take from the queues in turn (a model with requests goes to the back
/// of the line once a worker took a batch of it). A model is active while it had a request within
/// `active_window` or has a pass running; a worker is kept free for an active model with no pass
/// running whose examples cost under a quarter of the model about to take it (kHeavier, costs
/// as measured on their passes so far), so a heavy model's passes cannot hold every worker
/// while a light one waits behind them. A model with no pass running may always take a free
/// worker (none starves, on one worker too). Models alike (a stable and its candidate) share
/// every worker, and so does a model whose cost is not known yet. Within a model, requests are
/// answered in the order they came. The
/// model a request names is already loaded (ModelCache) and stays alive while it is queued.
/// The destructor answers what is queued, then joins the threads; predict() after that throws
/// Error(kUnavailable). A failed pass fails the requests in it, and only those.
/// Thread-safe: `mutex_` guards the queues, the tuners and `stopping_`.
class Batcher {
 public:
  /// `cuda`: the models run on a GPU (the defaults of the bounds above differ).
  explicit Batcher(BatchingOptions options, bool cuda = false);
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
  /// Requests waiting for a pass, all models together.
  std::size_t queued() const;
  /// Every model served so far, by id.
  std::vector<ModelTuning> tuning() const;
  std::chrono::microseconds p99_target() const { return tuner_options_.target; }
  /// The batch sizes a model will be served at now (1 and its cap): what a new version of it
  /// runs once before it takes requests (ModelCache's warm-up).
  std::vector<int> warm_sizes(const std::string& model_id) const;
  /// The bounds in force (the options with their automatic values resolved).
  int max_batch() const { return tuner_options_.max_batch; }
  std::chrono::microseconds max_delay() const { return tuner_options_.max_delay; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending;
  struct ModelQueue;
  struct Taken;
  void run();
  Taken next_batch();  // the batcher thread; empty when stopping and drained
  /// Under mutex_: the first queue in `ready_` that may take a worker now (any while stopping),
  /// or ready_.end(); `wake`: when an active model may stop counting as one.
  std::deque<const LoadedModel*>::iterator takeable(Clock::time_point now, Clock::time_point* wake);
  BatchTuner& tuner_for(const std::string& model_id);  // under mutex_

  /// A model's passes running now, its last request and what its examples cost (by model id,
  /// under mutex_).
  struct Activity {
    int running = 0;
    Clock::time_point last_request;
    double cost_us = 0;  ///< a pass's time per example, averaged over its last passes; 0: none yet
  };
  /// A model heavier than another by this factor (time per example) does not take a worker
  /// the other, active and idle, may need.
  static constexpr double kHeavier = 4.0;

  TunerOptions tuner_options_;
  int workers_ = 1;
  Clock::duration active_window_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<const LoadedModel*, ModelQueue> queues_;  ///< by model version; only ones with requests
  std::deque<const LoadedModel*> ready_;             ///< queues with requests no worker holds, in turn
  std::map<std::string, BatchTuner> tuners_;         ///< by model id: a new version keeps its tuning
  std::map<std::string, std::uint64_t> answered_;
  std::map<std::string, Activity> activity_;  ///< models active lately (pruned in takeable)
  int company_waits_ = 0;                     ///< workers waiting for a batch to fill (they watch their own queue only)
  bool stopping_ = false;
  std::atomic<std::uint64_t> batches_{0}, requests_{0}, examples_{0};
  std::vector<std::thread> threads_;
};

}  // namespace mlswarm
