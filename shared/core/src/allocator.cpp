#include "mlswarm/allocator.h"

#include <malloc.h>

#include <cstdlib>

namespace mlswarm {

std::string tune_allocator_for_tensors() {
  for (const char* name : {"GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                           "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX"}) {
    if (std::getenv(name) != nullptr) return std::string("glibc malloc as ") + name + " sets it";
  }
  constexpr int kMmapThreshold = 32 << 20;  // glibc's largest on 64-bit: HEAP_MAX_SIZE / 2
  constexpr int kTrimThreshold = 1 << 30;
  if (mallopt(M_MMAP_THRESHOLD, kMmapThreshold) != 1 || mallopt(M_TRIM_THRESHOLD, kTrimThreshold) != 1) {
    return "glibc malloc unchanged (mallopt refused)";
  }
  return "glibc malloc keeps freed memory for reuse (mmap threshold 32 MiB, trim threshold 1 GiB)";
}

void release_free_memory() { malloc_trim(0); }

}  // namespace mlswarm
