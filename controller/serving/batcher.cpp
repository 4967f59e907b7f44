#include "batcher.h"

#include <future>

#include <fmt/format.h>

#include "loaded_model.h"
#include "mlswarm/error.h"

namespace mlswarm {

struct Batcher::Pending {
  std::shared_ptr<const LoadedModel> model;
  std::vector<float> pixels;  ///< count * C*H*W intensities in 0..1
  std::int64_t count = 0;
  std::promise<PredictResult> result;
};

namespace {

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
  c10::InferenceMode inference;                        // no autograd bookkeeping at all
  torch::nn::Sequential model = m.model;               // a holder copy shares the weights; forward is not const
  if (!m.device.is_cpu()) input = input.to(m.device);  // one copy of the whole batch to the GPU
  // The weights are channels-last (ModelCache); so is the batch, so every layer runs in it.
  input = input.sub_(m.mean).div_(m.std).contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor probabilities = torch::softmax(model->forward(input), 1);
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

}  // namespace

Batcher::Batcher(BatchingOptions options) : options_(options) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int workers = options.workers > 0 ? options.workers : cores;
  torch::set_num_threads(options.threads > 0 ? options.threads : std::max(1, cores / workers));
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
  auto future = pending->result.get_future();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw Error(ErrorCode::kUnavailable, "the server is shutting down");
    queue_.push_back(std::move(pending));
  }
  cv_.notify_all();
  return future.get();
}

std::vector<std::shared_ptr<Batcher::Pending>> Batcher::next_batch() {
  std::vector<std::shared_ptr<Pending>> batch;
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) return batch;  // stopping and drained
  const auto deadline = std::chrono::steady_clock::now() + options_.max_delay;
  auto model = queue_.front()->model;
  auto examples_for = [&] {
    std::int64_t n = 0;
    for (const auto& p : queue_) n += p->model == model ? p->count : 0;
    return n;
  };
  if (queue_.front()->count < options_.max_batch) {
    cv_.wait_until(lock, deadline, [&] { return stopping_ || examples_for() >= options_.max_batch; });
  }
  std::int64_t n = 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if ((*it)->model == model && (batch.empty() || n + (*it)->count <= options_.max_batch)) {
      n += (*it)->count;
      batch.push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return batch;
}

void Batcher::run() {
  while (true) {
    auto batch = next_batch();
    if (batch.empty()) return;
    batches_.fetch_add(1, std::memory_order_relaxed);
    requests_.fetch_add(batch.size(), std::memory_order_relaxed);
    for (const auto& p : batch) examples_.fetch_add(static_cast<std::uint64_t>(p->count), std::memory_order_relaxed);
    try {
      run_batch(batch);
    } catch (const c10::Error& e) {
      auto error = std::make_exception_ptr(
          Error(ErrorCode::kInternal, fmt::format("forward pass failed: {}", e.what_without_backtrace())));
      for (auto& p : batch) p->result.set_exception(error);
    } catch (...) {
      for (auto& p : batch) p->result.set_exception(std::current_exception());
    }
  }
}

}  // namespace mlswarm
