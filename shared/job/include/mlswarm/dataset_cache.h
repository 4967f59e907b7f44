#pragma once

#include <cstdint>
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
/// Bounded (DATASET_CACHE_MB): after a load, datasets no job holds are dropped, least recently
/// used first, while the decoded bytes kept are over `max_bytes` (0: no bound). A dataset a job
/// holds is never dropped; one larger than the bound alone is still loaded (and logged).
class DatasetCache {
 public:
  DatasetCache(std::filesystem::path data_dir, std::filesystem::path home_dir, std::size_t max_bytes = 0);

  /// Throws what load_dataset throws.
  std::shared_ptr<const Dataset> get(const std::string& name);

  /// The decoded bytes kept now, and how many datasets were dropped for the bound so far.
  std::size_t bytes() const;
  std::size_t dropped() const;

 private:
  /// A folder dataset's manifest.json as last read: while it is unchanged on disk (time and
  /// size), get() does not read and parse it again (20,000 images make a 1.5 MB file).
  struct Stamp {
    std::filesystem::file_time_type mtime{};
    std::uintmax_t size = 0;
    bool operator==(const Stamp&) const = default;
  };
  struct Entry {
    std::shared_ptr<const Dataset> dataset;
    std::size_t bytes = 0;
    std::uint64_t used = 0;  ///< the use counter at its last get
    Stamp manifest;          ///< a folder dataset's, when it was loaded
  };
  void keep_within_bound(const std::string& kept);  // mutex_ held

  std::filesystem::path data_dir_;
  std::filesystem::path home_dir_;
  std::size_t max_bytes_;
  std::mutex load_mutex_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> loaded_;
  std::uint64_t uses_ = 0;
  std::size_t dropped_ = 0;
};

}  // namespace mlswarm
