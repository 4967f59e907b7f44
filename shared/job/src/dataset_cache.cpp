#include "mlswarm/dataset_cache.h"

#include <chrono>

#include "mlswarm/folder_dataset.h"

#include <spdlog/spdlog.h>

namespace mlswarm {

DatasetCache::DatasetCache(std::filesystem::path data_dir, std::filesystem::path home_dir)
    : data_dir_(std::move(data_dir)), home_dir_(std::move(home_dir)) {}

std::shared_ptr<const Dataset> DatasetCache::get(const std::string& name) {
  // A folder dataset registered again (its manifest's hash changed) is loaded again.
  std::string registered;
  if (find_dataset_info(name) == nullptr) {
    if (auto manifest = read_folder_manifest(home_dir_, name)) registered = manifest->content_hash;
  }
  auto cached = [&]() -> std::shared_ptr<const Dataset> {
    std::lock_guard lock(mutex_);
    auto it = loaded_.find(name);
    return it != loaded_.end() && it->second->info.content_hash == registered ? it->second : nullptr;
  };
  if (auto hit = cached()) return hit;
  std::lock_guard load_lock(load_mutex_);
  if (auto hit = cached()) return hit;
  const auto started = std::chrono::steady_clock::now();
  auto dataset = std::make_shared<const Dataset>(load_dataset(name, data_dir_, home_dir_));
  spdlog::info("dataset {} loaded: {} train, {} test images, {:.1f} s", name, dataset->train.count, dataset->test.count,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  std::lock_guard lock(mutex_);
  loaded_[name] = dataset;
  return dataset;
}

}  // namespace mlswarm
