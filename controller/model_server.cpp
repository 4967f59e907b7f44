#include "model_server.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/torch/model_zoo.h"

namespace mlswarm {
namespace fs = std::filesystem;
namespace {

/// One loaded model version. Immutable once built; shared by requests in flight.
struct LoadedModel {
  ModelMeta meta;
  torch::nn::Sequential model;
  torch::Tensor mean;  // [1][C][1][1]
  torch::Tensor std;
  fs::file_time_type meta_mtime;
  std::uintmax_t meta_size = 0;
};

/// A request waiting in the batcher. Request threads never touch LibTorch: every tensor
/// operation happens on the batcher thread, so one OpenMP team serves the whole process
/// instead of one per HTTP thread.
struct Pending {
  std::shared_ptr<const LoadedModel> model;
  std::vector<float> pixels;  // count * C*H*W intensities in 0..1
  std::int64_t count = 0;
  std::promise<PredictResult> result;
};

/// Runs one forward pass over every request of `batch` (all for the same model) and
/// answers each.
void run_batch(std::vector<std::shared_ptr<Pending>>& batch) {
  const LoadedModel& m = *batch.front()->model;
  const ModelMeta& meta = m.meta;
  std::int64_t total = 0;
  for (const auto& p : batch) total += p->count;
  torch::Tensor input = torch::empty({total, meta.channels, meta.height, meta.width}, torch::kFloat32);
  float* dst = input.data_ptr<float>();
  for (const auto& p : batch) dst = std::copy(p->pixels.begin(), p->pixels.end(), dst);
  torch::NoGradGuard no_grad;
  torch::nn::Sequential model = m.model;  // a holder copy shares the weights; forward is not const
  torch::Tensor probabilities = torch::softmax(model->forward(input.sub_(m.mean).div_(m.std)), 1).contiguous();
  torch::Tensor best = probabilities.argmax(1).contiguous();
  const float* prob = probabilities.data_ptr<float>();
  const std::int64_t* best_idx = best.data_ptr<std::int64_t>();
  const std::int64_t classes = probabilities.size(1);
  std::int64_t row = 0;
  for (auto& p : batch) {
    PredictResult result;
    result.model_id = meta.model_id;
    result.version = meta.version;
    for (std::int64_t i = 0; i < p->count; ++i, ++row) {
      auto idx = static_cast<std::size_t>(best_idx[row]);
      result.class_idxs.push_back(static_cast<int>(idx));
      result.class_tags.push_back(meta.class_names.at(idx));
      result.probabilities.emplace_back(prob + row * classes, prob + (row + 1) * classes);
    }
    p->result.set_value(std::move(result));
  }
}

}  // namespace

struct ModelServer::Impl {
  fs::path home_dir;
  BatchingOptions options;

  std::mutex models_mutex;  // guards models, load_count
  std::map<std::string, std::shared_ptr<const LoadedModel>> models;
  std::size_t load_count = 0;
  std::mutex load_mutex;  // one load at a time: two requests never read the same files twice

  std::mutex queue_mutex;  // guards queue, stopping
  std::condition_variable queue_cv;
  std::deque<std::shared_ptr<Pending>> queue;
  bool stopping = false;
  std::atomic<std::uint64_t> batches{0}, requests{0}, examples{0};
  std::thread batcher;

  std::shared_ptr<const LoadedModel> get(const std::string& model_id) {
    auto dir = model_dir(home_dir, model_id);
    require_not_symlink(dir / "meta.json", "model_id");
    require_not_symlink(dir / "model.pt", "model_id");
    std::error_code ec;
    auto mtime = fs::last_write_time(dir / "meta.json", ec);
    auto size = ec ? 0 : fs::file_size(dir / "meta.json", ec);
    if (ec) {
      throw Error(ErrorCode::kNotFound, fmt::format("unknown model '{}'", model_id), "model_id");
    }
    {
      std::lock_guard lock(models_mutex);
      auto it = models.find(model_id);
      if (it != models.end() && it->second->meta_mtime == mtime && it->second->meta_size == size) return it->second;
    }
    std::lock_guard load_lock(load_mutex);
    {
      std::lock_guard lock(models_mutex);
      auto it = models.find(model_id);
      if (it != models.end() && it->second->meta_mtime == mtime && it->second->meta_size == size) return it->second;
    }
    auto loaded = std::make_shared<LoadedModel>();
    // Stat first, then read: a write between the two makes the next request load again.
    loaded->meta_mtime = mtime;
    loaded->meta_size = size;
    try {
      loaded->model = load_trained_model(home_dir, model_id, &loaded->meta);
      auto c = static_cast<std::int64_t>(loaded->meta.channels);
      loaded->mean = torch::tensor(std::vector<float>(loaded->meta.mean.begin(), loaded->meta.mean.end())).view({1, c, 1, 1});
      loaded->std = torch::tensor(std::vector<float>(loaded->meta.std.begin(), loaded->meta.std.end())).view({1, c, 1, 1});
    } catch (const c10::Error& e) {
      throw Error(ErrorCode::kDataError, fmt::format("model {}: {}", model_id, e.what_without_backtrace()));
    }
    std::lock_guard lock(models_mutex);
    ++load_count;
    spdlog::info("model {} loaded: version {} ({} epochs, accuracy {:.4f})", model_id, loaded->meta.version,
                 loaded->meta.epochs.size(), loaded->meta.epochs.empty() ? 0.0 : loaded->meta.epochs.back().accuracy);
    models[model_id] = loaded;
    return loaded;
  }

  void run_batches() {
    while (true) {
      std::vector<std::shared_ptr<Pending>> batch;
      {
        std::unique_lock lock(queue_mutex);
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping and drained
        auto deadline = std::chrono::steady_clock::now() + options.max_delay;
        auto examples_for = [&](const std::shared_ptr<const LoadedModel>& model) {
          std::int64_t n = 0;
          for (const auto& p : queue) n += p->model == model ? p->count : 0;
          return n;
        };
        auto model = queue.front()->model;
        if (queue.front()->count < options.max_batch) {
          queue_cv.wait_until(lock, deadline, [&] { return stopping || examples_for(model) >= options.max_batch; });
        }
        std::int64_t n = 0;
        for (auto it = queue.begin(); it != queue.end();) {
          if ((*it)->model == model && (batch.empty() || n + (*it)->count <= options.max_batch)) {
            n += (*it)->count;
            batch.push_back(std::move(*it));
            it = queue.erase(it);
          } else {
            ++it;
          }
        }
      }
      batches.fetch_add(1, std::memory_order_relaxed);
      requests.fetch_add(batch.size(), std::memory_order_relaxed);
      for (const auto& p : batch) examples.fetch_add(static_cast<std::uint64_t>(p->count), std::memory_order_relaxed);
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
};

ModelServer::ModelServer(fs::path home_dir, BatchingOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->home_dir = std::move(home_dir);
  impl_->options = options;
  if (options.threads > 0) torch::set_num_threads(options.threads);
  else torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  impl_->batcher = std::thread([this] { impl_->run_batches(); });
}

ModelServer::~ModelServer() {
  {
    std::lock_guard lock(impl_->queue_mutex);
    impl_->stopping = true;
  }
  impl_->queue_cv.notify_all();
  impl_->batcher.join();
}

ModelMeta ModelServer::meta(const std::string& model_id) { return impl_->get(model_id)->meta; }

ModelServer::Stats ModelServer::stats() const {
  Stats s;
  s.loads = loads();
  s.batches = impl_->batches.load();
  s.requests = impl_->requests.load();
  s.examples = impl_->examples.load();
  return s;
}

std::size_t ModelServer::loads() const {
  std::lock_guard lock(impl_->models_mutex);
  return impl_->load_count;
}

PredictResult ModelServer::predict(const std::string& model_id, std::vector<float> pixels, std::int64_t count) {
  auto model = impl_->get(model_id);
  const ModelMeta& meta = model->meta;
  const std::int64_t chw = std::int64_t{meta.channels} * meta.height * meta.width;
  if (count <= 0 || static_cast<std::int64_t>(pixels.size()) != count * chw) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("expected {} examples of {} values", count, chw), "examples");
  }
  auto pending = std::make_shared<Pending>();
  pending->model = std::move(model);
  pending->pixels = std::move(pixels);
  pending->count = count;
  auto future = pending->result.get_future();
  {
    std::lock_guard lock(impl_->queue_mutex);
    if (impl_->stopping) throw Error(ErrorCode::kUnavailable, "the server is shutting down");
    impl_->queue.push_back(std::move(pending));
  }
  impl_->queue_cv.notify_all();
  return future.get();
}

}  // namespace mlswarm
