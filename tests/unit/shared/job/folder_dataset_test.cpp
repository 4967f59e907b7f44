#include "mlswarm/folder_dataset.h"

#include <gtest/gtest.h>
#include <stb_image_write.h>

#include <algorithm>
#include <fstream>

#include "../../../support/temp_dir.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/error.h"
#include "mlswarm/job.h"

namespace mlswarm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::TempDir;

void append(void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); }

/// An image of w x h pixels with `comp` channels, every byte `value`, as PNG or JPEG.
std::string image(int w, int h, int comp, unsigned char value, bool jpeg) {
  std::vector<unsigned char> pixels(static_cast<std::size_t>(w) * h * comp, value);
  std::string out;
  if (jpeg) {
    stbi_write_jpg_to_func(append, &out, w, h, comp, pixels.data(), 95);
  } else {
    stbi_write_png_to_func(append, &out, w, h, comp, pixels.data(), w * comp);
  }
  return out;
}

void write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::kInternal;
}

class FolderDatasetTest : public ::testing::Test {
 protected:
  /// HOME_DIR/datasets/pets/train/{dog,cat,bird}: 10 images each, a third JPEG, of 40 x 30 to
  /// 48 x 36 pixels, each class its own grey level; plus a file that is not an image by name,
  /// one that is by name but does not decode, and one over the pixel cap.
  void SetUp() override {
    const fs::path train = home_ / "datasets" / "pets" / "train";
    const std::vector<std::string> classes = {"dog", "cat", "bird"};
    for (std::size_t c = 0; c < classes.size(); ++c) {
      for (int i = 0; i < 10; ++i) {
        const bool jpeg = i % 3 == 0;
        write(train / classes[c] / (std::to_string(i) + (jpeg ? ".jpg" : ".png")),
              image(40 + (i % 3) * 4, 30 + (i % 3) * 3, 3, static_cast<unsigned char>(40 + 80 * c), jpeg));
      }
    }
    write(train / "dog" / "notes.txt", "not an image");
    write(train / "cat" / "broken.png", std::string("\x89PNG\r\n\x1a\n", 8) + std::string(40, 'x'));
    write(train / "bird" / "huge.png", image(2049, 2049, 1, 0, false));
  }

  FolderRequest request(const std::string& name = "pets") {
    FolderRequest r;
    r.name = name;
    r.path = "datasets/" + name;
    return r;
  }

  TempDir home_;
};

TEST_F(FolderDatasetTest, ClassesAreSortedTheSplitReproducibleAndBadFilesSkippedByName) {
  const FolderManifest m = scan_image_folder(home_.path(), request());
  EXPECT_EQ(m.classes, (std::vector<std::string>{"bird", "cat", "dog"}));
  EXPECT_EQ(m.channels, 3) << "colour images";
  EXPECT_EQ(m.height, 33) << "the median of the images' heights";
  EXPECT_EQ(m.width, 44);
  EXPECT_EQ(m.train.size() + m.test.size(), 30u);
  ASSERT_EQ(m.skipped.size(), 2u) << to_json(m).dump();
  EXPECT_EQ(m.skipped[0].path, "train/bird/huge.png");
  EXPECT_NE(m.skipped[0].why.find("over the"), std::string::npos) << m.skipped[0].why;
  EXPECT_EQ(m.skipped[1].path, "train/cat/broken.png");
  for (int label = 0; label < 3; ++label) {
    EXPECT_TRUE(std::any_of(m.test.begin(), m.test.end(), [&](const FolderFile& f) { return f.label == label; }))
        << "every class has a test image";
  }
  const FolderManifest again = scan_image_folder(home_.path(), request(), 1);
  EXPECT_EQ(to_json(again)["train"], to_json(m)["train"]) << "the split does not depend on threads or runs";
  EXPECT_EQ(to_json(again)["test"], to_json(m)["test"]);
  EXPECT_EQ(again.content_hash, m.content_hash);
}

TEST_F(FolderDatasetTest, ALoadedFolderHasItsImagesAtTheManifestsSizeAndAChangedFolderIsRefused) {
  FolderRequest r = request();
  r.height = 16;
  r.width = 16;
  r.channels = 1;
  write_folder_manifest(home_.path(), scan_image_folder(home_.path(), r));
  const auto m = read_folder_manifest(home_.path(), "pets");
  ASSERT_TRUE(m);
  EXPECT_EQ(require_dataset("pets", home_.path()).class_names, m->classes);
  const Dataset d = load_folder_dataset(home_.path(), *m);
  EXPECT_EQ(d.info.format, "folder");
  EXPECT_EQ(d.train.count + d.test.count, 30);
  ASSERT_EQ(d.train.images.size(), static_cast<std::size_t>(d.train.count) * 16 * 16);
  for (std::int64_t i = 0; i < d.train.count; ++i) {
    // Each class is one grey level (40, 120, 200 as colour; as luminance within a few steps).
    const int expected = 40 + 80 * (2 - d.train.labels[static_cast<std::size_t>(i)]);  // bird=2 -> 200
    EXPECT_NEAR(d.train.images[static_cast<std::size_t>(i) * 256 + 100], expected, 3) << i;
  }
  write(home_ / "datasets/pets/train/dog/1.png", image(40, 30, 3, 7, false));  // a file changes
  EXPECT_EQ(code_of([&] { load_folder_dataset(home_.path(), *m); }), ErrorCode::kDataError);
}

TEST_F(FolderDatasetTest, ATestFolderIsTheTestSplit) {
  write(home_ / "datasets/pets/test/cat/t.png", image(40, 30, 3, 120, false));
  write(home_ / "datasets/pets/test/fish/t.png", image(40, 30, 3, 9, false));
  const FolderManifest m = scan_image_folder(home_.path(), request());
  ASSERT_EQ(m.test.size(), 1u);
  EXPECT_EQ(m.test[0].path, "test/cat/t.png");
  EXPECT_EQ(m.test[0].label, 1);
  EXPECT_EQ(m.train.size(), 30u);
  EXPECT_TRUE(std::any_of(m.skipped.begin(), m.skipped.end(), [](const SkippedFile& s) {
    return s.path == "test/fish";
  })) << "a class train/ does not have";
}

TEST_F(FolderDatasetTest, PathsOutOfHomeAndLinksOutOfItAreRefused) {
  TempDir outside;
  write(outside / "train/x/a.png", image(8, 8, 1, 1, false));
  FolderRequest r = request();
  for (const std::string path : {"../x", "/tmp", "datasets/../../x", "", "datasets/none"}) {
    r.path = path;
    EXPECT_EQ(code_of([&] { scan_image_folder(home_.path(), r); }), ErrorCode::kInvalidArgument) << path;
  }
  fs::create_directory_symlink(outside.path(), home_ / "elsewhere");
  r.path = "elsewhere";
  EXPECT_EQ(code_of([&] { scan_image_folder(home_.path(), r); }), ErrorCode::kInvalidArgument);
  fs::create_symlink(outside / "train/x/a.png", home_ / "datasets/pets/train/dog/linked.png");
  const FolderManifest m = scan_image_folder(home_.path(), request());
  EXPECT_TRUE(std::any_of(m.skipped.begin(), m.skipped.end(), [](const SkippedFile& s) {
    return s.path == "train/dog/linked.png" && s.why == "a link out of HOME_DIR";
  })) << to_json(m)["skipped"].dump();
}

TEST_F(FolderDatasetTest, RequestsAreCheckedFieldByField) {
  auto code = [](const json& body) { return code_of([&] { parse_folder_request(body); }); };
  EXPECT_EQ(parse_folder_request(json{{"name", "pets"}}).path, "datasets/pets");
  EXPECT_EQ(code(json{{"name", "../x"}}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(json{{"name", "mnist"}}), ErrorCode::kInvalidArgument) << "a built-in's name";
  EXPECT_EQ(code(json{{"name", "p"}, {"image_size", {4, 4}}}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(json{{"name", "p"}, {"channels", 2}}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(json{{"name", "p"}, {"test_fraction", 1.5}}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code(json{{"name", "p"}, {"colour", true}}), ErrorCode::kInvalidArgument);
}

TEST_F(FolderDatasetTest, AJobMayNameAFolderDatasetWhichMustBeRegistered) {
  const JobSpec spec = parse_job_spec(json{{"dataset", "pets"}, {"example_idxs", {0, 20}}});
  EXPECT_EQ(spec.dataset, "pets");
  EXPECT_EQ(code_of([&] { require_dataset("pets", home_.path()); }), ErrorCode::kInvalidArgument)
      << "not registered yet";
  EXPECT_EQ(code_of([] { parse_job_spec(json{{"dataset", "../etc"}}); }), ErrorCode::kInvalidArgument);
  write_folder_manifest(home_.path(), scan_image_folder(home_.path(), request()));
  EXPECT_EQ(require_dataset("pets", home_.path()).format, "folder");
  EXPECT_EQ(folder_dataset_names(home_.path()), (std::vector<std::string>{"pets"}));
}

// DATASET_CACHE_MB: beyond the bound the least recently used dataset nothing holds is dropped;
// one a job holds is kept.
TEST_F(FolderDatasetTest, TheDatasetCacheDropsTheLeastRecentlyUsedDatasetNothingHolds) {
  FolderRequest r = request();
  r.height = 16;
  r.width = 16;
  write_folder_manifest(home_.path(), scan_image_folder(home_.path(), r));
  std::filesystem::copy(home_ / "datasets/pets", home_ / "datasets/cats", std::filesystem::copy_options::recursive);
  r.name = "cats";
  r.path = "datasets/cats";
  write_folder_manifest(home_.path(), scan_image_folder(home_.path(), r));
  const std::size_t one = 30 * 3 * 16 * 16 + 30;  // 30 images of 3x16x16 bytes and their labels
  DatasetCache cache("", home_.path(), one + one / 2);
  auto held = cache.get("pets");
  EXPECT_EQ(cache.bytes(), one);
  cache.get("cats");
  EXPECT_EQ(cache.dropped(), 0u) << "pets is held: both kept, over the bound";
  EXPECT_EQ(cache.bytes(), 2 * one);
  held.reset();
  cache.get("cats");  // a hit: nothing loads, nothing is dropped
  EXPECT_EQ(cache.dropped(), 0u);
  cache.get("pets");  // a hit too
  auto cats = cache.get("cats");
  EXPECT_EQ(cache.dropped(), 0u);
  write(home_ / "datasets/pets/train/dog/1.png", image(40, 30, 3, 7, false));
  r.name = "pets";
  r.path = "datasets/pets";
  write_folder_manifest(home_.path(), scan_image_folder(home_.path(), r));  // registered again: loaded again
  auto pets = cache.get("pets");
  EXPECT_EQ(cache.dropped(), 0u) << "cats is held; the old pets was replaced, not dropped";
  cats.reset();
  cache.get("pets");
  EXPECT_EQ(cache.bytes(), 2 * one) << "a hit loads nothing and so drops nothing";
  DatasetCache small("", home_.path(), one + one / 2);
  small.get("cats");
  small.get("pets");
  EXPECT_EQ(small.dropped(), 1u) << "cats, held by nothing, dropped for pets";
  EXPECT_EQ(small.bytes(), one);
}

}  // namespace
}  // namespace mlswarm
