#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "mlswarm/allocator.h"

namespace mlswarm {
namespace {

// The operator's own malloc settings win; without any, the daemons' tuning applies.
TEST(Allocator, TunesGlibcUnlessTheOperatorConfiguredIt) {
  const char* had = std::getenv("MALLOC_ARENA_MAX");
  const std::string saved = had != nullptr ? had : "";
  ::setenv("MALLOC_ARENA_MAX", "4", 1);
  EXPECT_EQ(tune_allocator_for_tensors(), "glibc malloc as MALLOC_ARENA_MAX sets it");
  ::unsetenv("MALLOC_ARENA_MAX");
  if (std::getenv("GLIBC_TUNABLES") == nullptr && std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr &&
      std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr && std::getenv("MALLOC_TOP_PAD_") == nullptr &&
      std::getenv("MALLOC_MMAP_MAX_") == nullptr) {
    EXPECT_EQ(tune_allocator_for_tensors(),
              "glibc malloc keeps freed memory for reuse (mmap threshold 32 MiB, trim threshold 1 GiB)");
  }
  if (had != nullptr) ::setenv("MALLOC_ARENA_MAX", saved.c_str(), 1);
}

}  // namespace
}  // namespace mlswarm
