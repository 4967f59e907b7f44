#include "model_cache.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "loaded_model.h"
#include "mlswarm/error.h"
#include "mlswarm/torch/model_zoo.h"
#include "serving_model.h"

namespace mlswarm {
namespace fs = std::filesystem;

ModelCache::ModelCache(fs::path home_dir, const std::string& device, std::chrono::milliseconds recheck)
    : home_dir_(std::move(home_dir)), recheck_(recheck) {
  const bool has_cuda = torch::cuda::is_available();
  if (device == "cuda" && !has_cuda) {
    throw Error(ErrorCode::kInvalidArgument,
                "SERVE_DEVICE is cuda but LibTorch sees no CUDA device (built without CUDA, or no GPU visible)",
                "SERVE_DEVICE");
  }
  cuda_ = device == "cuda" || (device == "auto" && has_cuda);
  spdlog::info("serving on {}", cuda_ ? "cuda" : "cpu");
}

ModelCache::~ModelCache() = default;

std::size_t ModelCache::loads() const {
  std::lock_guard lock(mutex_);
  return loads_;
}

std::shared_ptr<const LoadedModel> ModelCache::fresh(const std::string& key) const {
  std::lock_guard lock(mutex_);
  auto it = models_.find(key);
  if (it == models_.end() || std::chrono::steady_clock::now() - it->second.checked >= recheck_) return nullptr;
  return it->second.model;
}

std::shared_ptr<const LoadedModel> ModelCache::get(const std::string& model_id, int version) {
  const std::string key = version > 0 ? fmt::format("{}/versions/{}", model_id, version) : model_id;
  if (auto model = fresh(key)) return model;  // checked on disk less than `recheck_` ago
  const auto dir = model_version_dir(home_dir_, model_id, version);
  require_not_symlink(dir / "meta.json", "model_id");
  require_not_symlink(dir / "model.pt", "model_id");
  std::error_code ec;
  const auto mtime = fs::last_write_time(dir / "meta.json", ec);
  const auto size = ec ? 0 : fs::file_size(dir / "meta.json", ec);
  if (ec) {
    std::lock_guard lock(mutex_);
    models_.erase(key);  // a pruned version, a removed model
    if (version > 0 && fs::exists(model_dir(home_dir_, model_id) / "meta.json", ec)) {
      throw Error(ErrorCode::kNotFound, fmt::format("model '{}' has no version {}", model_id, version), "version");
    }
    throw Error(ErrorCode::kNotFound, fmt::format("unknown model '{}'", model_id), "model_id");
  }
  const auto checked = std::chrono::steady_clock::now();
  auto current = [&]() -> std::shared_ptr<const LoadedModel> {
    std::lock_guard lock(mutex_);
    auto it = models_.find(key);
    if (it == models_.end() || it->second.model->meta_mtime != mtime || it->second.model->meta_size != size) {
      return nullptr;
    }
    it->second.checked = checked;
    return it->second.model;
  };
  if (auto model = current()) return model;
  std::lock_guard load_lock(load_mutex_);
  if (auto model = current()) return model;  // another request loaded it meanwhile
  auto loaded = std::make_shared<LoadedModel>();
  // Stat first, then read: a write between the two makes the next request load again.
  loaded->meta_mtime = mtime;
  loaded->meta_size = size;
  try {
    // Batch norm folded into the convolutions, channels-last as the batcher's batches.
    loaded->model = prepare_for_serving(load_trained_model(home_dir_, model_id, &loaded->meta, version), !cuda_);
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
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kDataError, fmt::format("model {}: {}", model_id, e.what_without_backtrace()));
  }
  std::lock_guard lock(mutex_);
  ++loads_;
  spdlog::info("model {} loaded: version {}{} ({} epochs, accuracy {:.4f})", model_id, loaded->meta.version,
               version > 0 ? " (pinned)" : "", loaded->meta.epochs.size(),
               loaded->meta.epochs.empty() ? 0.0 : loaded->meta.epochs.back().accuracy);
  models_[key] = Entry{loaded, checked};
  return loaded;
}

}  // namespace mlswarm
