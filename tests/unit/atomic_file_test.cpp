#include "mlswarm/atomic_file.h"

#include <gtest/gtest.h>

#include "../support/temp_dir.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using testing::TempDir;

std::size_t entries(const std::filesystem::path& dir) {
  return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator(dir), {}));
}

TEST(AtomicFile, WritesCreatesParentsAndReplaces) {
  TempDir dir;
  auto path = dir / "a/b/file.json";
  write_file_atomic(path, "first");
  EXPECT_EQ(read_file(path, 100), "first");
  write_file_atomic(path, std::string(10000, 'x'));
  EXPECT_EQ(read_file(path, 100000), std::string(10000, 'x'));
  EXPECT_EQ(entries(dir / "a/b"), 1u) << "a temporary file was left behind";
}

TEST(AtomicFile, AFailedWriteLeavesTheOldFile) {
  TempDir dir;
  auto path = dir / "model.pt";
  write_file_atomic(path, "good");
  // Renaming onto a directory fails after the temporary was written: it must be removed
  // and nothing else touched.
  std::filesystem::create_directories(dir / "blocked");
  EXPECT_THROW(write_file_atomic(dir / "blocked", "new"), Error);
  EXPECT_EQ(read_file(path, 100), "good");
  EXPECT_EQ(entries(dir.path()), 2u);
}

TEST(AtomicFile, ReadFileEnforcesItsLimit) {
  TempDir dir;
  write_file_atomic(dir / "f", "0123456789");
  EXPECT_THROW(read_file(dir / "f", 5), Error);
  EXPECT_THROW(read_file(dir / "missing", 5), Error);
}

}  // namespace
}  // namespace mlswarm
