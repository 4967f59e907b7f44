#include "checkpoint_store.h"

#include <chrono>

#include <spdlog/spdlog.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/metrics.h"

namespace mlswarm {

CheckpointStore::CheckpointStore(std::filesystem::path job_dir, int attempt)
    : fence_(job_dir, attempt), checkpoint_(job_dir / "checkpoint.pt"), previous_(job_dir / "checkpoint.prev.pt") {
  Metrics::global().describe("mlswarm_checkpoint_write_seconds", "histogram",
                             "time to seal, write and fsync one checkpoint");
}

void CheckpointStore::claim() const { fence_.claim(); }

void CheckpointStore::guarded(const std::function<void()>& write) const { fence_.guarded(write); }

void CheckpointStore::save(std::string_view payload) const {
  fence_.guarded([&] { write(payload); });
}

void CheckpointStore::publish(const std::function<void()>& write_model, std::string_view checkpoint) const {
  fence_.guarded([&] {
    write_model();
    write(checkpoint);
  });
}

void CheckpointStore::write(std::string_view payload) const {
  const auto started = std::chrono::steady_clock::now();
  std::error_code ec;
  if (std::filesystem::exists(checkpoint_, ec)) std::filesystem::rename(checkpoint_, previous_, ec);
  write_file_atomic(checkpoint_, seal(payload));
  Metrics::global().observe("mlswarm_checkpoint_write_seconds", {},
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

std::optional<std::string> CheckpointStore::read(const std::filesystem::path& path) const {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec) || std::filesystem::is_symlink(path, ec)) return std::nullopt;
  try {
    return unseal(read_file(path, std::size_t{4} << 30), path.string());
  } catch (const std::exception& e) {
    spdlog::warn("checkpoint {} unusable ({})", path.string(), e.what());
    return std::nullopt;
  }
}

bool CheckpointStore::resume(
    const std::function<bool(const std::string& payload, const std::string& what)>& use) const {
  for (const auto& path : {checkpoint_, previous_}) {
    auto payload = read(path);
    if (!payload) continue;
    try {
      if (use(*payload, path.string())) return true;
    } catch (const std::exception& e) {
      spdlog::warn("checkpoint {} unusable ({})", path.string(), e.what());
    }
  }
  return false;
}

}  // namespace mlswarm
