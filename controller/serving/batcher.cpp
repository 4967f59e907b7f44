#include "batcher.h"

#include <algorithm>
#include <future>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "loaded_model.h"
#include "mlswarm/error.h"
#include "mlswarm/log.h"

namespace mlswarm {

using Clock = std::chrono::steady_clock;

struct Batcher::Pending {
  std::shared_ptr<const LoadedModel> model;
  std::vector<float> pixels;  ///< count * C*H*W intensities in 0..1
  std::int64_t count = 0;
  Clock::time_point enqueued;
  std::promise<PredictResult> result;
};

struct Batcher::ModelQueue {
  std::deque<std::shared_ptr<Pending>> pending;
  std::int64_t examples = 0;
  bool held = false;  ///< a worker is taking a batch of it (it is not in `ready_` meanwhile)
};

struct Batcher::Taken {
  std::vector<std::shared_ptr<Pending>> batch;
  bool full = false;  ///< more were queued than the cap let it take
};

namespace {

/// Normalisation, the forward pass and softmax of a batch of intensities in 0..1 (on the CPU).
torch::Tensor class_probabilities(const LoadedModel& m, torch::Tensor input) {
  torch::nn::Sequential model = m.model;               // a holder copy shares the weights; forward is not const
  if (!m.device.is_cpu()) input = input.to(m.device);  // one copy of the whole batch to the GPU
  // The weights are channels-last (ModelCache); so is the batch, so every layer runs in it.
  input = input.sub_(m.mean).div_(m.std).contiguous(torch::MemoryFormat::ChannelsLast);
  return torch::softmax(model->forward(input), 1);
}

/// One forward pass over every request of `batch` (all for the same model); answers each.
template <typename PendingPtr>
void run_batch(std::vector<PendingPtr>& batch) {
  const LoadedModel& m = *batch.front()->model;
  const ModelMeta& meta = m.meta;
  std::int64_t total = 0;
  for (const auto& p : batch) total += p->count;
  torch::Tensor input = torch::empty({total, meta.channels, meta.height, meta.width}, torch::kFloat32);
  float* dst = input.data_ptr<float>();
  for (const auto& p : batch) dst = std::copy(p->pixels.begin(), p->pixels.end(), dst);
  c10::InferenceMode inference;  // no autograd bookkeeping at all
  torch::Tensor probabilities = class_probabilities(m, input);
  torch::Tensor best = probabilities.argmax(1);
  if (!m.device.is_cpu()) {  // and one copy of the answers back
    probabilities = probabilities.to(torch::kCPU);
    best = best.to(torch::kCPU);
  }
  probabilities = probabilities.contiguous();
  best = best.contiguous();
  const float* prob = probabilities.data_ptr<float>();
  const std::int64_t* best_idx = best.data_ptr<std::int64_t>();
  const std::int64_t classes = probabilities.size(1);
  std::int64_t row = 0;
  std::vector<PredictResult> results;  // all built before any is answered: a throw answers none
  for (auto& p : batch) {
    PredictResult& result = results.emplace_back();
    result.model_id = meta.model_id;
    result.version = meta.version;
    for (std::int64_t i = 0; i < p->count; ++i, ++row) {
      auto idx = static_cast<std::size_t>(best_idx[row]);
      result.class_idxs.push_back(static_cast<int>(idx));
      result.class_tags.push_back(meta.class_names.at(idx));
      result.probabilities.emplace_back(prob + row * classes, prob + (row + 1) * classes);
    }
  }
  for (std::size_t i = 0; i < batch.size(); ++i) batch[i]->result.set_value(std::move(results[i]));
}

/// The target missed while the passes themselves stay within their half of it: the requests
/// queue for the cores, which no batch size fixes. Said to the operator at most once a minute.
void warn_if_saturated(const std::string& model_id, const BatchTuner::Window& w, std::chrono::microseconds target) {
  if (w.p99 <= target || 2 * w.pass_p50 > target) return;
  constexpr std::chrono::seconds kEvery{60};
  if (const std::size_t n = log_due("saturated " + model_id, kEvery)) {
    spdlog::warn(
        "model {}: p99 {:.1f} ms in the batcher over the {:.1f} ms target (PREDICT_P99_TARGET_MS) with "
        "passes of {:.1f} ms at a mean batch of {:.1f}: requests queue for the cores; more controller "
        "replicas or a GPU would serve them within it{}",
        model_id, w.p99.count() / 1e3, target.count() / 1e3, w.pass_p50.count() / 1e3, w.mean_batch,
        repeats(n, kEvery));
  }
}

}  // namespace

void warm_up(const LoadedModel& model, const std::vector<int>& sizes) {
  c10::InferenceMode inference;
  const ModelMeta& meta = model.meta;
  for (int n : sizes) {
    torch::Tensor out = class_probabilities(model, torch::full({n, meta.channels, meta.height, meta.width}, 0.5f));
    if (!model.device.is_cpu()) out = out.to(torch::kCPU);  // waits for the pass
  }
}

Batcher::Batcher(BatchingOptions options, bool cuda) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int workers = options.workers > 0 ? options.workers : (cuda ? 2 : cores);
  workers_ = workers;
  active_window_ = options.active_window;
  torch::set_num_threads(options.threads > 0 ? options.threads : std::max(1, cores / workers));
  tuner_options_.target = options.p99_target;
  tuner_options_.max_batch = options.max_batch > 0 ? options.max_batch : (cuda ? 1024 : 64);
  tuner_options_.max_delay =
      options.max_delay.count() >= 0 ? options.max_delay : std::chrono::microseconds(cuda ? 2000 : 0);
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { run(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

Batcher::Stats Batcher::stats() const { return {batches_.load(), requests_.load(), examples_.load()}; }

std::size_t Batcher::queued() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [key, q] : queues_) n += q.pending.size();
  return n;
}

BatchTuner& Batcher::tuner_for(const std::string& model_id) {
  auto it = tuners_.find(model_id);
  if (it == tuners_.end()) it = tuners_.emplace(model_id, BatchTuner(tuner_options_, Clock::now())).first;
  return it->second;
}

std::vector<ModelTuning> Batcher::tuning() const {
  std::lock_guard lock(mutex_);
  std::vector<ModelTuning> out;
  for (const auto& [id, tuner] : tuners_) {
    const auto& w = tuner.last_window();
    auto answered = answered_.find(id);
    out.push_back({id, tuner.batch(), tuner.wait(), w.p99, w.pass_p99, w.mean_batch, w.requests,
                   answered == answered_.end() ? 0 : answered->second});
  }
  return out;
}

std::vector<int> Batcher::warm_sizes(const std::string& model_id) const {
  std::lock_guard lock(mutex_);
  auto it = tuners_.find(model_id);
  const int cap =
      it != tuners_.end() ? it->second.batch() : std::min(tuner_options_.start_batch, tuner_options_.max_batch);
  return cap > 1 ? std::vector<int>{1, cap} : std::vector<int>{1};
}

PredictResult Batcher::predict(std::shared_ptr<const LoadedModel> model, std::vector<float> pixels,
                               std::int64_t count) {
  const ModelMeta& meta = model->meta;
  const std::int64_t chw = std::int64_t{meta.channels} * meta.height * meta.width;
  if (count <= 0 || static_cast<std::int64_t>(pixels.size()) != count * chw) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("expected {} examples of {} values", count, chw), "examples");
  }
  auto pending = std::make_shared<Pending>();
  pending->model = std::move(model);
  pending->pixels = std::move(pixels);
  pending->count = count;
  pending->enqueued = Clock::now();
  auto future = pending->result.get_future();
  bool fresh = false, company = false;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw Error(ErrorCode::kUnavailable, "the server is shutting down");
    const LoadedModel* key = pending->model.get();
    activity_[meta.model_id].last_request = pending->enqueued;
    ModelQueue& q = queues_[key];
    fresh = q.pending.empty() && !q.held;
    if (fresh) ready_.push_back(key);
    q.examples += count;
    q.pending.push_back(std::move(pending));
    company = company_waits_ > 0;
  }
  // One worker for a queue that just became ready; a queue already in line or held has its
  // worker coming, unless one waits for company (then all: it checks its own queue only).
  if (company) {
    cv_.notify_all();
  } else if (fresh) {
    cv_.notify_one();
  }
  return future.get();
}

std::deque<const LoadedModel*>::iterator Batcher::takeable(Clock::time_point now, Clock::time_point* wake) {
  *wake = now + active_window_;
  if (stopping_ || ready_.empty()) return ready_.begin();  // a shutdown drains every queue
  int running = 0;
  struct Idle {  // an active model with no pass running: it may need a worker any moment
    std::string_view id;
    double cost;
  };
  std::vector<Idle> idle;
  for (auto it = activity_.begin(); it != activity_.end();) {
    const Activity& a = it->second;
    const auto until = a.last_request + active_window_;
    if (a.running == 0 && until <= now && std::none_of(ready_.begin(), ready_.end(), [&](const LoadedModel* key) {
          return key->meta.model_id == it->first;
        })) {
      it = activity_.erase(it);
      continue;
    }
    running += a.running;
    if (a.running == 0) idle.push_back({it->first, a.cost_us});
    if (a.running == 0 && until > now) *wake = std::min(*wake, until);  // it may stop counting then
    ++it;
  }
  return std::find_if(ready_.begin(), ready_.end(), [&](const LoadedModel* key) {
    // A model with no pass running always may (none starves; on one worker the light model
    // waits for the heavy one's pass, as it must). Otherwise a worker is kept free for each
    // other idle active model whose examples cost under a quarter of this one's; models alike
    // (a stable and its candidate) share every worker.
    const std::string& id = key->meta.model_id;
    const Activity& a = activity_[id];
    if (a.running == 0) return true;
    const auto reserved = std::count_if(idle.begin(), idle.end(), [&](const Idle& other) {
      return other.id != id && other.cost > 0 && a.cost_us > kHeavier * other.cost;
    });
    return running + reserved < workers_;
  });
}

Batcher::Taken Batcher::next_batch() {
  Taken taken;
  std::unique_lock lock(mutex_);
  auto pick = ready_.end();
  while (true) {
    Clock::time_point wake;
    pick = takeable(Clock::now(), &wake);
    if (pick != ready_.end()) break;
    if (ready_.empty()) {
      if (stopping_) return taken;  // stopping and drained
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, wake);  // held back for a lighter model: until a pass ends or it goes idle
    }
  }
  const LoadedModel* key = *pick;
  ready_.erase(pick);
  ModelQueue& q = queues_.at(key);
  ++activity_[key->meta.model_id].running;
  q.held = true;
  const BatchTuner& tuner = tuner_for(q.pending.front()->model->meta.model_id);
  const int cap = tuner.batch();
  if (q.examples < cap && tuner.wait().count() > 0) {  // company for the first, where waiting fills batches
    ++company_waits_;
    cv_.wait_until(lock, q.pending.front()->enqueued + tuner.wait(), [&] { return stopping_ || q.examples >= cap; });
    --company_waits_;
  }
  std::int64_t n = 0;
  while (!q.pending.empty() && (taken.batch.empty() || n + q.pending.front()->count <= cap)) {
    n += q.pending.front()->count;
    taken.batch.push_back(std::move(q.pending.front()));
    q.pending.pop_front();
  }
  q.examples -= n;
  q.held = false;
  taken.full = !q.pending.empty();
  if (taken.full) {
    ready_.push_back(key);  // the back of the line: the other models' turn first
  } else {
    queues_.erase(key);
  }
  return taken;
}

void Batcher::run() {
  while (true) {
    Taken taken = next_batch();
    auto& batch = taken.batch;
    if (batch.empty()) return;
    if (taken.full) cv_.notify_one();  // what is left of the model's queue, for another worker
    batches_.fetch_add(1, std::memory_order_relaxed);
    requests_.fetch_add(batch.size(), std::memory_order_relaxed);
    std::int64_t examples = 0;
    for (const auto& p : batch) examples += p->count;
    examples_.fetch_add(static_cast<std::uint64_t>(examples), std::memory_order_relaxed);
    const std::string model_id = batch.front()->model->meta.model_id;
    std::vector<Clock::time_point> enqueued;
    for (const auto& p : batch) enqueued.push_back(p->enqueued);
    const auto started = Clock::now();
    try {
      run_batch(batch);
    } catch (const c10::Error& e) {
      auto error = std::make_exception_ptr(
          Error(ErrorCode::kInternal, fmt::format("forward pass failed: {}", e.what_without_backtrace())));
      for (auto& p : batch) p->result.set_exception(error);
    } catch (...) {
      for (auto& p : batch) p->result.set_exception(std::current_exception());
    }
    const auto done = Clock::now();
    std::vector<std::chrono::microseconds> latencies;
    for (auto t : enqueued) latencies.push_back(std::chrono::duration_cast<std::chrono::microseconds>(done - t));
    std::optional<BatchTuner::Window> judged;  // a window the tuner has just judged
    {
      std::lock_guard lock(mutex_);
      Activity& activity = activity_[model_id];
      --activity.running;
      const double cost = std::chrono::duration<double, std::micro>(done - started).count() /
                          static_cast<double>(std::max<std::int64_t>(1, examples));
      activity.cost_us = activity.cost_us > 0 ? 0.8 * activity.cost_us + 0.2 * cost : cost;
      if (!ready_.empty()) cv_.notify_one();  // a worker that waited for this model's share
      BatchTuner& tuner = tuner_for(model_id);
      const auto decisions = tuner.decisions();
      tuner.record(done, static_cast<int>(examples), taken.full,
                   std::chrono::duration_cast<std::chrono::microseconds>(done - started), latencies);
      if (tuner.decisions() != decisions) judged = tuner.last_window();
      answered_[model_id] += batch.size();
    }
    if (judged) warn_if_saturated(model_id, *judged, tuner_options_.target);
  }
}

}  // namespace mlswarm
