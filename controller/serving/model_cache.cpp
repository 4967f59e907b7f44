#include "model_cache.h"

#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "loaded_model.h"
#include "mlswarm/allocator.h"
#include "mlswarm/error.h"
#include "mlswarm/torch/mapped_tensors.h"
#include "mlswarm/torch/model_zoo.h"
#include "serving_model.h"

namespace mlswarm {
namespace fs = std::filesystem;

using Clock = std::chrono::steady_clock;

ModelCache::ModelCache(fs::path home_dir, ModelCacheOptions options)
    : home_dir_(std::move(home_dir)), options_(std::move(options)) {
  const bool has_cuda = torch::cuda::is_available();
  if (options_.device == "cuda" && !has_cuda) {
    throw Error(ErrorCode::kInvalidArgument,
                "SERVE_DEVICE is cuda but LibTorch sees no CUDA device (built without CUDA, or no GPU visible)",
                "SERVE_DEVICE");
  }
  cuda_ = options_.device == "cuda" || (options_.device == "auto" && has_cuda);
  install_mapped_tensors();  // done at start by the daemon; here for a cache made without it (tests)
  spdlog::info(
      "serving on {}{}", cuda_ ? "cuda" : "cpu",
      options_.memory_bytes > 0 ? fmt::format(", at most {} MB of weights loaded", options_.memory_bytes >> 20) : "");
  reloader_ = std::thread([this] { reload_loop(); });
}

ModelCache::~ModelCache() { stop(); }

void ModelCache::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  reload_cv_.notify_all();
  if (reloader_.joinable()) reloader_.join();
}

void ModelCache::set_warm_sizes(std::function<std::vector<int>(const std::string& model_id)> sizes) {
  std::lock_guard lock(load_mutex_);
  options_.warm_sizes = std::move(sizes);
}

bool ModelCache::settled() const {
  std::lock_guard lock(mutex_);
  return reloading_.empty();
}

ModelCache::Stats ModelCache::stats() const {
  std::lock_guard lock(mutex_);
  return {loads_, unloads_, models_.size(), bytes_};
}

std::shared_ptr<const LoadedModel> ModelCache::fresh(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = models_.find(key);
  const auto now = Clock::now();
  if (it == models_.end() || now - it->second.checked >= options_.recheck) return nullptr;
  it->second.used = now;
  return it->second.model;
}

std::shared_ptr<const LoadedModel> ModelCache::get(const std::string& model_id, int version) {
  const std::string key = version > 0 ? fmt::format("{}/versions/{}", model_id, version) : model_id;
  if (auto model = fresh(key)) return model;  // checked on disk less than `recheck` ago
  const auto dir = model_version_dir(home_dir_, model_id, version);
  require_not_symlink(dir / "meta.json", "model_id");
  require_not_symlink(dir / "model.pt", "model_id");
  std::error_code ec;
  const auto mtime = fs::last_write_time(dir / "meta.json", ec);
  const auto size = ec ? 0 : fs::file_size(dir / "meta.json", ec);
  if (ec) {
    {
      std::lock_guard lock(mutex_);
      if (auto it = models_.find(key); it != models_.end()) {  // a pruned version, a removed model
        bytes_ -= it->second.model->bytes;
        models_.erase(it);
      }
    }
    if (version > 0 && fs::exists(model_dir(home_dir_, model_id) / "meta.json", ec)) {
      throw Error(ErrorCode::kNotFound, fmt::format("model '{}' has no version {}", model_id, version), "version");
    }
    throw Error(ErrorCode::kNotFound, fmt::format("unknown model '{}'", model_id), "model_id");
  }
  const auto checked = Clock::now();
  auto loaded_now = [&]() -> std::shared_ptr<const LoadedModel> {
    std::lock_guard lock(mutex_);
    auto it = models_.find(key);
    if (it == models_.end()) return nullptr;
    Entry& e = it->second;
    e.checked = checked;
    e.used = checked;
    const bool current = e.model->meta_mtime == mtime && e.model->meta_size == size;
    const bool failed = e.failed_mtime == mtime && e.failed_size == size;
    if (!current && !failed && reloading_.insert(key).second) {
      reloads_.push_back({key, model_id, version});  // loaded and warmed off the request path
      reload_cv_.notify_one();
    }
    return e.model;  // the version it has until then
  };
  if (auto model = loaded_now()) return model;
  return on_cache_thread([&]() -> std::shared_ptr<const LoadedModel> {
    if (auto model = loaded_now()) return model;  // another request loaded it meanwhile
    {
      // Room first, for about the checkpoint's size: the bound holds while it loads too.
      std::error_code size_ec;
      const auto incoming = fs::file_size(dir / "model.pt", size_ec);
      std::lock_guard lock(mutex_);
      unload_over_bound(key, size_ec ? 0 : static_cast<std::size_t>(incoming));
    }
    auto loaded = load(model_id, version, mtime, size);
    {
      std::lock_guard lock(mutex_);
      insert(key, loaded, checked);
    }
    release_free_memory();  // what the load freed, and any version unloaded for it
    return loaded;
  });
}

std::shared_ptr<const LoadedModel> ModelCache::on_cache_thread(std::function<std::shared_ptr<const LoadedModel>()> f) {
  if (std::this_thread::get_id() == reloader_.get_id()) return f();  // already there
  auto task = std::make_shared<LoadNow>();
  task->load = std::move(f);
  auto result = task->result.get_future();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw Error(ErrorCode::kUnavailable, "the server is shutting down");
    loads_now_.push_back(task);
  }
  reload_cv_.notify_one();
  return result.get();
}

bool ModelCache::run_load_now(std::unique_lock<std::mutex>& lock) {
  if (loads_now_.empty()) return false;
  auto task = std::move(loads_now_.front());
  loads_now_.pop_front();
  lock.unlock();
  std::lock_guard load_lock(load_mutex_);
  try {
    task->result.set_value(task->load());
  } catch (...) {
    task->result.set_exception(std::current_exception());
  }
  return true;
}

std::shared_ptr<const LoadedModel> ModelCache::load(const std::string& model_id, int version, fs::file_time_type mtime,
                                                    std::uintmax_t size) {
  const auto started = Clock::now();
  auto loaded = std::make_shared<LoadedModel>();
  // Stat first, then read: a write between the two makes the next request load again.
  loaded->meta_mtime = mtime;
  loaded->meta_size = size;
  // The weights it keeps are given back whole when it is unloaded; what the load only used is
  // unmapped as it is freed (mapped_tensors.h). The warm-up is inside too: its first
  // channels-last pass reorders the first linear layer's weight, which the version keeps; its
  // activations cost a mapping each, on a load only.
  MappedTensorsScope mapped;
  try {
    // Batch norm folded into the convolutions, channels-last as the batcher's batches.
    // Its size is the trained model's: the served one holds the same weights folded, in closures.
    torch::nn::Sequential trained = load_trained_model(home_dir_, model_id, &loaded->meta, version);
    for (const auto& p : trained->parameters()) loaded->bytes += p.nbytes();
    for (const auto& b : trained->buffers()) loaded->bytes += b.nbytes();
    loaded->model = prepare_for_serving(trained, !cuda_);
    const auto c = static_cast<std::int64_t>(loaded->meta.channels);
    loaded->mean =
        torch::tensor(std::vector<float>(loaded->meta.mean.begin(), loaded->meta.mean.end())).view({1, c, 1, 1});
    loaded->std =
        torch::tensor(std::vector<float>(loaded->meta.std.begin(), loaded->meta.std.end())).view({1, c, 1, 1});
    if (cuda_) {
      loaded->device = torch::Device(torch::kCUDA);
      loaded->model->to(loaded->device);
      loaded->mean = loaded->mean.to(loaded->device);
      loaded->std = loaded->std.to(loaded->device);
    }
    warm_up(*loaded, options_.warm_sizes ? options_.warm_sizes(model_id) : std::vector<int>{1});
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kDataError, fmt::format("model {}: {}", model_id, e.what_without_backtrace()));
  }
  spdlog::info("model {} loaded and warm: version {}{} ({} epochs, accuracy {:.4f}, {:.1f} MB, {} ms)", model_id,
               loaded->meta.version, version > 0 ? " (pinned)" : "", loaded->meta.epochs.size(),
               loaded->meta.epochs.empty() ? 0.0 : loaded->meta.epochs.back().accuracy,
               static_cast<double>(loaded->bytes) / 1e6,
               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count());
  return loaded;
}

std::size_t ModelCache::insert(const std::string& key, std::shared_ptr<const LoadedModel> model,
                               Clock::time_point checked) {
  Entry& e = models_[key];
  if (e.model) bytes_ -= e.model->bytes;
  bytes_ += model->bytes;
  e.model = std::move(model);
  e.checked = checked;
  e.used = Clock::now();
  ++loads_;
  return unload_over_bound(key);
}

std::size_t ModelCache::unload_over_bound(const std::string& keep, std::size_t incoming) {
  std::size_t unloaded = 0;
  while (options_.memory_bytes > 0 && bytes_ + incoming > options_.memory_bytes) {
    auto lru = models_.end();
    for (auto it = models_.begin(); it != models_.end(); ++it) {
      // use_count 1: only the cache holds it (requests take theirs under mutex_, as this runs).
      if (it->first == keep || it->second.model.use_count() != 1) continue;
      if (lru == models_.end() || it->second.used < lru->second.used) lru = it;
    }
    if (lru == models_.end()) break;  // every other one is in use: over the bound until they are done
    spdlog::info("model {} version {} unloaded: {:.1f} MB loaded, SERVE_MEMORY_MB {}", lru->second.model->meta.model_id,
                 lru->second.model->meta.version, static_cast<double>(bytes_) / 1e6, options_.memory_bytes >> 20);
    bytes_ -= lru->second.model->bytes;
    ++unloads_;
    ++unloaded;
    models_.erase(lru);
  }
  return unloaded;
}

void ModelCache::reload_loop() {
  while (true) {
    Reload r;
    {
      std::unique_lock lock(mutex_);
      reload_cv_.wait(lock, [&] { return stopping_ || !reloads_.empty() || !loads_now_.empty(); });
      if (stopping_) {
        for (auto& task : loads_now_) {
          task->result.set_exception(
              std::make_exception_ptr(Error(ErrorCode::kUnavailable, "the server is shutting down")));
        }
        loads_now_.clear();
        return;
      }
      if (run_load_now(lock)) continue;  // a request waits for it: before any reload
      r = std::move(reloads_.front());
      reloads_.pop_front();
    }
    const auto dir = model_version_dir(home_dir_, r.model_id, r.version);
    std::error_code ec;
    const auto mtime = fs::last_write_time(dir / "meta.json", ec);
    const auto size = ec ? 0 : fs::file_size(dir / "meta.json", ec);
    std::shared_ptr<const LoadedModel> loaded;
    std::string error = ec ? ec.message() : "";
    if (!ec) {
      std::lock_guard load_lock(load_mutex_);
      try {
        loaded = load(r.model_id, r.version, mtime, size);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    std::unique_lock lock(mutex_);
    reloading_.erase(r.key);
    auto it = models_.find(r.key);
    if (loaded) {
      insert(r.key, std::move(loaded), Clock::now());
      lock.unlock();
      release_free_memory();
    } else if (it != models_.end()) {  // the version it has keeps serving; this one is not tried again
      spdlog::error("model {}: its new version does not load, version {} keeps serving: {}", r.model_id,
                    it->second.model->meta.version, error);
      it->second.failed_mtime = mtime;
      it->second.failed_size = size;
    }
  }
}

}  // namespace mlswarm
