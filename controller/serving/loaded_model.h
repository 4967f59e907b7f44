#pragma once

// A model version as serving holds it. Includes LibTorch: only for serving's translation
// units (model_cache.cpp, batcher.cpp).

#include <cstdint>
#include <filesystem>
#include <vector>

#include <torch/torch.h>

#include "mlswarm/model_meta.h"

namespace mlswarm {

/// One loaded model version. Immutable once built; shared by the requests in flight and the
/// cache, and freed when the last of them lets go.
struct LoadedModel {
  ModelMeta meta;
  torch::nn::Sequential model{nullptr};
  torch::Tensor mean;  ///< [1][C][1][1], on `device`
  torch::Tensor std;
  torch::Device device{torch::kCPU};           ///< where the weights are (SERVE_DEVICE)
  std::filesystem::file_time_type meta_mtime;  ///< of the meta.json these weights came with
  std::uintmax_t meta_size = 0;
  std::size_t bytes = 0;  ///< its weights and buffers as trained (SERVE_MEMORY_MB counts these)
};

/// Runs `model` once at each of `sizes` (a batch of that many examples), as serving will: what
/// a new version does before any request is routed to it (ModelCache), so that no request pays
/// for its first passes (allocations, kernels chosen, a GPU's lazy initialisation).
void warm_up(const LoadedModel& model, const std::vector<int>& sizes);

}  // namespace mlswarm
