#include "mlswarm/atomic_file.h"

#include <gtest/gtest.h>

#include "../../../support/temp_dir.h"
#include "mlswarm/error.h"
#include "mlswarm/model_meta.h"

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

namespace mlswarm {
namespace {

TEST(HomeDirPaths, RefuseInvalidIdsAndSymlinkedFolders) {
  testing::TempDir home;
  testing::TempDir elsewhere;
  std::filesystem::create_directories(home / "models");
  std::filesystem::create_directories(home / "jobs");
  EXPECT_EQ(model_dir(home.path(), "m1"), home / "models" / "m1");
  EXPECT_THROW(model_dir(home.path(), ".."), Error);
  EXPECT_THROW(model_dir(home.path(), "a/b"), Error);
  EXPECT_THROW(job_dir(home.path(), ""), Error);
  std::filesystem::create_directory_symlink(elsewhere.path(), home / "models" / "evil");
  std::filesystem::create_directory_symlink(elsewhere.path(), home / "jobs" / "evil");
  try {
    model_dir(home.path(), "evil");
    ADD_FAILURE() << "a symlinked model folder was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(e.field(), "model_id");
  }
  EXPECT_THROW(job_dir(home.path(), "evil"), Error);
  std::filesystem::create_symlink(elsewhere / "secret", home / "models" / "m1-meta");
  EXPECT_THROW(require_not_symlink(home / "models" / "m1-meta", "model_id"), Error);
  EXPECT_NO_THROW(require_not_symlink(home / "models", "model_id"));
}

}  // namespace
}  // namespace mlswarm

namespace mlswarm {
namespace {

TEST(ModelMetaJson, RefusesShapesAndNumbersOutOfRange) {
  ModelMeta meta;
  meta.model_id = "m1";
  meta.model_type = ModelType::kConvnet;
  meta.dataset = "fashion-mnist";
  meta.class_names = {"a", "b"};
  meta.mean = {0.5};
  meta.std = {0.25};
  nlohmann::json good = to_json(meta);
  EXPECT_EQ(model_meta_from_json(good).height, 28);
  for (const auto& [pointer, value] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"/input_shape/0", 1e10},
                                                           {"/input_shape/1", 0},
                                                           {"/input_shape/2", 28.5},
                                                           {"/version", 1e300},
                                                           {"/model_crc32", -1},
                                                           {"/model_crc32", 4294967296.0},
                                                           {"/normalization/std/0", 0.0}}) {
    nlohmann::json bad = good;
    bad[nlohmann::json::json_pointer(pointer)] = value;
    EXPECT_THROW(model_meta_from_json(bad), Error) << pointer << " = " << value.dump();
  }
}

}  // namespace
}  // namespace mlswarm
