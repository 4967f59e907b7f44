#include "model_server.h"

#include "loaded_model.h"

namespace mlswarm {

ModelServer::ModelServer(std::filesystem::path home_dir, BatchingOptions options)
    : cache_(std::move(home_dir), options.device), batcher_(options) {}

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
  s.loads = cache_.loads();
  return s;
}

}  // namespace mlswarm
