#include "mlswarm/torch/mapped_tensors.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/version.h>

// LibTorch 2.3 made Allocator::allocate non-const and added a pure copy_data.
#ifndef TORCH_VERSION_MAJOR
#error "torch/version.h did not define TORCH_VERSION_MAJOR"
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define MLSWARM_TORCH_2_3 1
#define MLSWARM_ALLOCATE_CONST
#else
#define MLSWARM_TORCH_2_3 0
#define MLSWARM_ALLOCATE_CONST const
#endif

namespace mlswarm {
namespace {

constexpr std::size_t kPage = 4096;
thread_local int t_scopes = 0;

/// The mappings alive, by address (their size is needed to unmap them). Never destroyed: a
/// tensor may be freed after static destructors ran.
struct Mappings {
  std::mutex mutex;
  std::unordered_map<void*, std::size_t> sizes;
  std::atomic<std::size_t> bytes{0};
};
Mappings& mappings() {
  static auto* m = new Mappings;
  return *m;
}

std::atomic<c10::DeleterFnPtr> g_fallback_deleter{nullptr};  // set once, at install

/// The deleter of a mapping; also the raw deleter, so it passes the rest to LibTorch's (what
/// oneDNN's glue allocates through the raw interface, before the install too).
void release(void* p) {
  if ((reinterpret_cast<std::uintptr_t>(p) & (kPage - 1)) == 0) {
    std::size_t size = 0;
    Mappings& m = mappings();
    {
      std::lock_guard lock(m.mutex);
      if (auto it = m.sizes.find(p); it != m.sizes.end()) {
        size = it->second;
        m.sizes.erase(it);
      }
    }
    if (size > 0) {
      ::munmap(p, size);
      m.bytes -= size;
      return;
    }
  }
  if (auto fallback = g_fallback_deleter.load(std::memory_order_acquire)) fallback(p);
}

/// Outside a scope, and under kMappedTensorMinBytes, LibTorch's allocator's own DataPtr (its
/// deleter, its memory reporting). raw_deleter() is `release`, which is not the deleter of those
/// DataPtrs, as Allocator.h would have it: it gives them to LibTorch's raw deleter, so the raw
/// interface frees both kinds right (nothing in LibTorch compares a CPU storage's deleter).
class MappingAllocator final : public c10::Allocator {
 public:
  explicit MappingAllocator(c10::Allocator* fallback) : fallback_(fallback) {}

  c10::DataPtr allocate(std::size_t n) MLSWARM_ALLOCATE_CONST override {
    if (t_scopes == 0 || n < kMappedTensorMinBytes) return fallback_->allocate(n);
    const std::size_t size = (n + kPage - 1) / kPage * kPage;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return fallback_->allocate(n);  // malloc's memory is as good, if not as tidy
    Mappings& m = mappings();
    {
      std::lock_guard lock(m.mutex);
      m.sizes.emplace(p, size);
    }
    m.bytes += size;
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return g_fallback_deleter.load(std::memory_order_acquire) != nullptr ? &release : nullptr;
  }

#if MLSWARM_TORCH_2_3
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif

 private:
  c10::Allocator* fallback_;
};

}  // namespace

void install_mapped_tensors() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::Allocator* fallback = c10::GetCPUAllocator();
    g_fallback_deleter.store(fallback->raw_deleter(), std::memory_order_release);
    // Never destroyed: LibTorch's glue frees through it during static destruction.
    static auto* allocator = new MappingAllocator(fallback);
    c10::SetCPUAllocator(allocator, /*priority=*/1);
  });
}

MappedTensorsScope::MappedTensorsScope() { ++t_scopes; }
MappedTensorsScope::~MappedTensorsScope() { --t_scopes; }

std::size_t mapped_tensor_bytes() { return mappings().bytes.load(); }

}  // namespace mlswarm
