#include "batch_tuner.h"

#include <algorithm>
#include <cmath>

namespace mlswarm {
namespace {

using std::chrono::microseconds;

/// The q-quantile (0..1) of `values` (reordered); 0 when empty.
std::int64_t quantile(std::vector<std::int64_t>& values, double q) {
  if (values.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
  const auto nth = values.begin() + static_cast<std::ptrdiff_t>(std::clamp<std::size_t>(rank, 1, values.size()) - 1);
  std::nth_element(values.begin(), nth, values.end());
  return *nth;
}

}  // namespace

BatchTuner::BatchTuner(TunerOptions options, Clock::time_point now)
    : options_(options),
      batch_(std::clamp(options.start_batch, 1, std::max(1, options.max_batch))),
      window_start_(now) {}

void BatchTuner::record(Clock::time_point now, int examples, bool full, microseconds pass,
                        const std::vector<microseconds>& latencies) {
  passes_us_.push_back(pass.count());
  for (auto l : latencies) latencies_us_.push_back(l.count());
  examples_ += examples;
  full_passes_ += full ? 1 : 0;
  const auto age = now - window_start_;
  if ((age >= options_.window && static_cast<int>(latencies_us_.size()) >= options_.min_requests) ||
      age >= options_.max_window) {
    decide(now);
  }
}

void BatchTuner::decide(Clock::time_point now) {
  Window w;
  w.requests = latencies_us_.size();
  w.p99 = microseconds(quantile(latencies_us_, 0.99));
  w.pass_p50 = microseconds(quantile(passes_us_, 0.5));
  w.pass_p99 = microseconds(quantile(passes_us_, 0.99));
  w.mean_batch = passes_us_.empty() ? 0.0 : static_cast<double>(examples_) / static_cast<double>(passes_us_.size());
  // A pass may take half the target; the rest is the wait behind the one before. Its median is
  // what its batch size costs; the slow tail of passes is the machine's (a thread preempted on
  // busy cores), which a smaller batch does not shorten but makes more frequent.
  const microseconds budget = options_.target / 2;
  const bool over = w.pass_p50 > budget;
  const bool full = 2 * full_passes_ >= static_cast<int>(passes_us_.size());
  if (over) {
    batch_ = std::max(1, std::min(batch_ - 1, static_cast<int>(batch_ * 0.8)));
    trial_cost_ = 0;
  } else if (full) {
    grow(w, budget);
  } else {
    trial_cost_ = 0;  // the demand fell below the cap: no verdict on its last step
  }
  tune_wait(w, over || w.p99 > options_.target);
  last_ = w;
  ++decisions_;
  latencies_us_.clear();
  passes_us_.clear();
  examples_ = 0;
  full_passes_ = 0;
  window_start_ = now;
}

void BatchTuner::grow(const Window& w, microseconds budget) {
  const double cost = static_cast<double>(w.pass_p50.count()) / std::max(1.0, w.mean_batch);  // per example
  if (ceiling_holdoff_ > 0 && --ceiling_holdoff_ == 0) ceiling_ = 0;
  if (trial_cost_ > 0) {  // the window after a step up: did it lower the cost of an example?
    const bool paid = cost < (1.0 - kMinGain) * trial_cost_;
    if (!paid) {
      batch_ = trial_from_;
      ceiling_ = trial_from_;
      ceiling_holdoff_ = kCeilingWindows;
    }
    trial_cost_ = 0;
    if (!paid) return;
  }
  if (ceiling_ > 0 && batch_ >= ceiling_) return;
  // Grown only as far as a pass, roughly linear in its batch, is expected to stay in budget.
  const int step = std::max(1, batch_ / 8);
  const double projected = static_cast<double>(w.pass_p50.count()) * (batch_ + step) / std::max(1.0, w.mean_batch);
  if (projected > static_cast<double>(budget.count()) || batch_ >= options_.max_batch) return;
  trial_cost_ = cost;
  trial_from_ = batch_;
  batch_ = std::min(options_.max_batch, batch_ + step);
}

void BatchTuner::tune_wait(const Window& w, bool over) {
  if (options_.max_delay.count() <= 0) {
    wait_ = microseconds(0);
    return;
  }
  const microseconds step = std::max(microseconds(50), options_.max_delay / 8);
  const bool room = w.p99 + step < options_.target / 2 && w.mean_batch < 0.5 * batch_;
  if (over) {
    wait_ /= 2;
    if (wait_ < microseconds(10)) wait_ = microseconds(0);
    wait_holdoff_ = 10;
  } else if (wait_.count() > 0) {  // a trial: kept only while batches grow with it
    if (w.mean_batch < 1.25 * batch_before_wait_) {
      wait_ = microseconds(0);
      wait_holdoff_ = 50;
    } else if (room) {
      wait_ = std::min(options_.max_delay, wait_ + step);
    }
  } else if (wait_holdoff_ > 0) {
    --wait_holdoff_;
  } else if (room) {
    batch_before_wait_ = w.mean_batch;
    wait_ = std::min(options_.max_delay, step);
  }
}

}  // namespace mlswarm
