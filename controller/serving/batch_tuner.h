#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace mlswarm {

/// What the batcher is told to aim for, and the bounds it keeps to.
struct TunerOptions {
  /// PREDICT_P99_TARGET_MS: the p99 of a request's time in the batcher (queued plus its pass).
  std::chrono::microseconds target{std::chrono::milliseconds(20)};
  int max_batch = 64;                          ///< PREDICT_MAX_BATCH: the cap never grows past it
  std::chrono::microseconds max_delay{0};      ///< PREDICT_MAX_DELAY_US: the wait never grows past it
  int start_batch = 8;                         ///< where a model starts (the hand-tuned CPU default)
  std::chrono::milliseconds window{100};       ///< how often a decision is taken (given `min_requests`)
  int min_requests = 32;                       ///< a window decides with at least this many answers...
  std::chrono::milliseconds max_window{1000};  ///< ...or once it is this old with any
};

/// One model's batch cap and wait on one device, tuned online to a latency target (AIMD, as
/// Clipper does it): a pass may take at most half of the target (the other half is for the wait
/// behind the pass before it). At the end of each window:
///  - the median of its passes over that budget: the cap shrinks multiplicatively (x0.8, at
///    least by one), and the wait halves. The median, not the p99: on busy cores the slowest
///    passes are threads preempted, which smaller batches make more frequent, not shorter (the
///    p99 was tried first: under a closed loop of 16 clients on 2 cores it drove the cap to 1);
///  - else, when at least half of its passes were full (more examples queued than the cap took):
///    the cap grows additively (+1, or +cap/8 once it is large, so that a GPU gets from 8 to
///    hundreds within seconds), up to `max_batch`, as long as each step pays: a step is kept
///    only when the next window's cost of an example (median pass over mean batch) is at least
///    kMinGain under the window's before it; otherwise the cap goes back and stays there for
///    kCeilingWindows. A batch that serves no more requests a second only adds to the wait of
///    the requests behind it (on 2 CPU cores, 64 clients: a cap of 30 against 10 gave the same
///    requests/s and a p99 of 12 ms against 10);
///  - the wait is tried only when batches run far below the cap with the latency well under the
///    target: it grows in steps up to `max_delay`, and is dropped (and not tried again for a
///    while) unless the batches grew with it. Where it does not fill batches there is no wait.
/// A pure policy: time comes in with each call, nothing here sleeps or reads a clock.
/// Not thread-safe (the batcher calls it under its lock).
class BatchTuner {
 public:
  using Clock = std::chrono::steady_clock;
  explicit BatchTuner(TunerOptions options, Clock::time_point now = {});

  int batch() const { return batch_; }
  std::chrono::microseconds wait() const { return wait_; }

  /// A pass ran at `now`: `examples` in it, `full` when more were queued than the cap let it
  /// take, `pass` its duration, `latencies` each request's time in the batcher.
  void record(Clock::time_point now, int examples, bool full, std::chrono::microseconds pass,
              const std::vector<std::chrono::microseconds>& latencies);

  /// The last finished window, for /metrics and the dashboard.
  struct Window {
    std::chrono::microseconds p99{0};  ///< time in the batcher
    std::chrono::microseconds pass_p50{0};
    std::chrono::microseconds pass_p99{0};
    double mean_batch = 0;
    std::uint64_t requests = 0;
  };
  const Window& last_window() const { return last_; }
  std::uint64_t decisions() const { return decisions_; }

 private:
  void decide(Clock::time_point now);
  void grow(const Window& w, std::chrono::microseconds budget);
  void tune_wait(const Window& w, bool over);

  static constexpr double kMinGain = 0.03;    ///< a step up must lower the cost of an example by 3%
  static constexpr int kCeilingWindows = 50;  ///< a step that did not pay is tried again after 50 windows

  TunerOptions options_;
  int batch_;
  std::chrono::microseconds wait_{0};
  Clock::time_point window_start_;
  std::vector<std::int64_t> latencies_us_;  ///< this window's
  std::vector<std::int64_t> passes_us_;
  std::int64_t examples_ = 0;
  int full_passes_ = 0;
  Window last_;
  std::uint64_t decisions_ = 0;
  /// The wait's trial: the mean batch before it began; windows left before another may start.
  double batch_before_wait_ = 0;
  int wait_holdoff_ = 0;
  /// The step up on trial: the cost of an example before it (0: none) and the cap it came from.
  double trial_cost_ = 0;
  int trial_from_ = 0;
  /// A cap whose next step did not pay (0: none), kept for ceiling_holdoff_ more growth windows.
  int ceiling_ = 0;
  int ceiling_holdoff_ = 0;
};

}  // namespace mlswarm
