#include "mlswarm/allocator.h"

#include <malloc.h>

#include <cstdlib>

namespace mlswarm {
namespace {
constexpr int kTrimThreshold = 1 << 30;
bool g_tuned = false;  // set once, at start, before other threads
}  // namespace

std::string tune_allocator_for_tensors() {
  for (const char* name : {"GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                           "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX"}) {
    if (std::getenv(name) != nullptr) return std::string("glibc malloc as ") + name + " sets it";
  }
  constexpr int kMmapThreshold = 32 << 20;  // glibc's largest on 64-bit: HEAP_MAX_SIZE / 2
  if (mallopt(M_MMAP_THRESHOLD, kMmapThreshold) != 1 || mallopt(M_TRIM_THRESHOLD, kTrimThreshold) != 1) {
    return "glibc malloc unchanged (mallopt refused)";
  }
  g_tuned = true;
  return "glibc malloc keeps freed memory for reuse (mmap threshold 32 MiB, trim threshold 1 GiB)";
}

void release_free_memory() {
  malloc_trim(0);  // every arena's free chunks, and the main heap's top
  if (!g_tuned) return;
  // A thread arena's top is given back only by a free of 64 KiB or more into that arena while
  // the top is above the trim threshold: with the threshold lowered for a moment, one such free
  // trims the calling thread's arena (where its loads and frees happened).
  constexpr int kMomentaryThreshold = 128 << 10;
  mallopt(M_TRIM_THRESHOLD, kMomentaryThreshold);
  void* block = std::malloc(std::size_t{256} << 10);
  std::free(block);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
}

}  // namespace mlswarm
