#pragma once

#include <cstddef>

namespace mlswarm {

/// Large CPU tensors in memory mappings of their own, for what a thread allocates on purpose
/// to keep (a served model's weights, as it loads). In malloc, such weights lie in the loading
/// thread's arena between the temporaries of each load (the checkpoint's bytes, the tensors
/// before batch norm was folded, a warm-up's activations); unloading a version leaves holes
/// that free memory only in part, and the process's resident memory drifts above what its
/// loaded weights need (SERVE_MEMORY_MB). A mapping of its own is given back whole when the
/// tensor is freed, by whichever thread frees it.
///
/// install_mapped_tensors() puts an allocator in front of LibTorch's CPU allocator, once per
/// process, at start, before threads use tensors (LibTorch reads its allocator without a lock);
/// later calls do nothing. It changes nothing by
/// itself: only while a MappedTensorsScope lives on a thread do that thread's CPU allocations
/// of kMappedTensorMinBytes or more get a mapping of their own. Every other allocation, on
/// every thread, goes to LibTorch's allocator as before. Without install, scopes do nothing.
constexpr std::size_t kMappedTensorMinBytes = std::size_t{64} << 10;

void install_mapped_tensors();

class MappedTensorsScope {
 public:
  MappedTensorsScope();
  ~MappedTensorsScope();
  MappedTensorsScope(const MappedTensorsScope&) = delete;
  MappedTensorsScope& operator=(const MappedTensorsScope&) = delete;
};

/// The bytes in such mappings now, process-wide (whole pages).
std::size_t mapped_tensor_bytes();

}  // namespace mlswarm
