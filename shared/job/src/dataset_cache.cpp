#include "mlswarm/dataset_cache.h"

#include <chrono>

#include "mlswarm/folder_dataset.h"

#include <spdlog/spdlog.h>

namespace mlswarm {

namespace {

std::size_t bytes_of(const Dataset& d) {
  return d.train.images.size() + d.train.labels.size() + d.test.images.size() + d.test.labels.size();
}

constexpr double kMiB = 1024.0 * 1024.0;

}  // namespace

DatasetCache::DatasetCache(std::filesystem::path data_dir, std::filesystem::path home_dir, std::size_t max_bytes)
    : data_dir_(std::move(data_dir)), home_dir_(std::move(home_dir)), max_bytes_(max_bytes) {}

std::shared_ptr<const Dataset> DatasetCache::get(const std::string& name) {
  // A folder dataset registered again (its manifest's hash changed) is loaded again; its
  // manifest is read only when the file changed since the dataset was loaded.
  const bool folder = find_dataset_info(name) == nullptr;
  Stamp stamp;
  if (folder) {
    std::error_code ec;
    const auto path = folder_manifest_path(home_dir_, name);
    stamp = {std::filesystem::last_write_time(path, ec), ec ? 0 : std::filesystem::file_size(path, ec)};
  }
  std::string registered;
  bool read = false;
  auto cached = [&]() -> std::shared_ptr<const Dataset> {
    std::lock_guard lock(mutex_);
    auto it = loaded_.find(name);
    if (it == loaded_.end()) return nullptr;
    if (folder && !(read || it->second.manifest == stamp)) return nullptr;  // read it, then judge
    if (read && it->second.dataset->info.content_hash != registered) return nullptr;
    it->second.used = ++uses_;
    it->second.manifest = stamp;
    return it->second.dataset;
  };
  if (auto hit = cached()) return hit;
  if (folder) {
    if (auto manifest = read_folder_manifest(home_dir_, name)) registered = manifest->content_hash;
    read = true;
    if (auto hit = cached()) return hit;
  }
  std::lock_guard load_lock(load_mutex_);
  if (auto hit = cached()) return hit;
  const auto started = std::chrono::steady_clock::now();
  auto dataset = std::make_shared<const Dataset>(load_dataset(name, data_dir_, home_dir_));
  spdlog::info("dataset {} loaded: {} train, {} test images, {:.1f} s, {:.0f} MB", name, dataset->train.count,
               dataset->test.count, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
               static_cast<double>(bytes_of(*dataset)) / kMiB);
  std::lock_guard lock(mutex_);
  loaded_[name] = Entry{dataset, bytes_of(*dataset), ++uses_, stamp};
  keep_within_bound(name);
  return dataset;
}

void DatasetCache::keep_within_bound(const std::string& kept) {
  if (max_bytes_ == 0) return;
  for (;;) {
    std::size_t total = 0;
    auto oldest = loaded_.end();
    for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
      total += it->second.bytes;
      // use_count 1: only this cache holds it (no job, no request).
      const bool droppable = it->first != kept && it->second.dataset.use_count() == 1;
      if (droppable && (oldest == loaded_.end() || it->second.used < oldest->second.used)) oldest = it;
    }
    if (total <= max_bytes_) return;
    if (oldest == loaded_.end()) {
      spdlog::warn("datasets: {:.0f} MB decoded, over DATASET_CACHE_MB {:.0f}: every one kept is in use",
                   static_cast<double>(total) / kMiB, static_cast<double>(max_bytes_) / kMiB);
      return;
    }
    spdlog::info("dataset {} dropped from memory ({:.0f} MB; DATASET_CACHE_MB {:.0f})", oldest->first,
                 static_cast<double>(oldest->second.bytes) / kMiB, static_cast<double>(max_bytes_) / kMiB);
    loaded_.erase(oldest);
    ++dropped_;
  }
}

std::size_t DatasetCache::bytes() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& [name, e] : loaded_) total += e.bytes;
  return total;
}

std::size_t DatasetCache::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

}  // namespace mlswarm
