#include "model_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "loaded_model.h"

namespace mlswarm {

ModelServer::ModelServer(std::filesystem::path home_dir, BatchingOptions options, std::size_t memory_bytes)
    : cache_(std::move(home_dir), ModelCacheOptions{options.device, std::chrono::milliseconds(100), memory_bytes, {}}),
      batcher_(options, cache_.cuda()) {
  cache_.set_warm_sizes([this](const std::string& model_id) { return batcher_.warm_sizes(model_id); });
}

// The cache's reloading thread asks the batcher for warm-up sizes: it stops before the batcher goes.
ModelServer::~ModelServer() {
  stopping_ = true;
  if (preloader_.joinable()) preloader_.join();
  cache_.stop();
}

void ModelServer::preload(std::vector<std::pair<std::string, int>> models) {
  if (models.empty() || preloader_.joinable()) return;
  warming_ = static_cast<int>(models.size());
  preloader_ = std::thread([this, models = std::move(models)] {
    for (const auto& [id, version] : models) {
      if (stopping_) return;
      try {
        cache_.get(id, version);
      } catch (const std::exception& e) {
        spdlog::error("model {}{}: not preloaded: {}", id, version > 0 ? fmt::format(" version {}", version) : "",
                      e.what());
      }
      --warming_;
    }
    spdlog::info("serving: {} preloaded model(s) warm", models.size());
  });
}

std::optional<std::string> ModelServer::not_ready() const {
  const int n = warming_.load();
  if (n > 0) return fmt::format("{} model(s) to serve still loading and warming", n);
  return std::nullopt;
}

std::shared_ptr<const LoadedModel> ModelServer::model(const std::string& model_id, int version) {
  return cache_.get(model_id, version);
}

const ModelMeta& ModelServer::meta_of(const LoadedModel& model) { return model.meta; }

PredictResult ModelServer::predict(std::shared_ptr<const LoadedModel> model, std::vector<float> pixels,
                                   std::int64_t count) {
  return batcher_.predict(std::move(model), std::move(pixels), count);
}

ModelMeta ModelServer::meta(const std::string& model_id, int version) { return cache_.get(model_id, version)->meta; }

ModelServer::Stats ModelServer::stats() const {
  Stats s;
  static_cast<Batcher::Stats&>(s) = batcher_.stats();
  const ModelCache::Stats cache = cache_.stats();
  s.loads = cache.loads;
  s.unloads = cache.unloads;
  s.loaded = cache.loaded;
  s.bytes = cache.bytes;
  return s;
}

}  // namespace mlswarm
