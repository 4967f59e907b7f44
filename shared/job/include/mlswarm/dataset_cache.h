#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "mlswarm/dataset.h"

namespace mlswarm {

/// Datasets loaded once per process and shared read-only by all jobs.
/// Thread-safe: `mutex_` guards `loaded_`; loading happens under a per-cache load mutex so
/// that two jobs asking for the same dataset read it once. A failed load is not cached, so a
/// file fixed by the operator is picked up by the next job.
class DatasetCache {
 public:
  DatasetCache(std::filesystem::path data_dir, std::filesystem::path home_dir);

  /// Throws what load_dataset throws.
  std::shared_ptr<const Dataset> get(const std::string& name);

 private:
  std::filesystem::path data_dir_;
  std::filesystem::path home_dir_;
  std::mutex load_mutex_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<const Dataset>> loaded_;
};

}  // namespace mlswarm
