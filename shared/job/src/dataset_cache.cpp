#include "mlswarm/dataset_cache.h"

#include <spdlog/spdlog.h>

namespace mlswarm {

DatasetCache::DatasetCache(std::filesystem::path data_dir, std::filesystem::path home_dir)
    : data_dir_(std::move(data_dir)), home_dir_(std::move(home_dir)) {}

std::shared_ptr<const Dataset> DatasetCache::get(const std::string& name) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = loaded_.find(name); it != loaded_.end()) return it->second;
  }
  std::lock_guard load_lock(load_mutex_);
  {
    std::lock_guard lock(mutex_);
    if (auto it = loaded_.find(name); it != loaded_.end()) return it->second;
  }
  auto dataset = std::make_shared<const Dataset>(load_dataset(name, data_dir_, home_dir_));
  spdlog::info("dataset {} loaded: {} train, {} test images", name, dataset->train.count, dataset->test.count);
  std::lock_guard lock(mutex_);
  loaded_[name] = dataset;
  return dataset;
}

}  // namespace mlswarm
