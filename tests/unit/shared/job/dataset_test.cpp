#include "mlswarm/dataset.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include "../../../support/temp_dir.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using testing::make_idx;
using testing::TempDir;
using testing::write_bytes;

void write_gz(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  std::filesystem::create_directories(path.parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

/// The message of the kDataError that `f` throws.
template <typename F>
std::string data_error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kDataError) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return {};
}

TEST(Idx, ParsesAnImageArray) {
  auto bytes = make_idx({2, 3, 4}, [](std::size_t i) { return i; });
  IdxArray a = parse_idx(bytes, "x");
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{2, 3, 4}));
  ASSERT_EQ(a.data.size(), 24u);
  EXPECT_EQ(a.data[23], 23);
}

TEST(Idx, ReadsGzippedAndPlainFiles) {
  TempDir dir;
  auto bytes = make_idx({5}, [](std::size_t i) { return 9 - i; });
  write_gz(dir / "a.gz", bytes);
  write_bytes(dir / "b", bytes);
  EXPECT_EQ(read_idx_file(dir / "a.gz").data, read_idx_file(dir / "b").data);
}

TEST(Idx, WrongMagicNamesTheFile) {
  TempDir dir;
  auto bytes = make_idx({5}, [](std::size_t) { return 0; });
  bytes[0] = 0x1f;
  write_bytes(dir / "labels", bytes);
  std::string message = data_error_of([&] { read_idx_file(dir / "labels"); });
  EXPECT_NE(message.find((dir / "labels").string()), std::string::npos) << message;
  EXPECT_NE(message.find("magic"), std::string::npos) << message;
}

TEST(Idx, RejectsOtherElementTypes) {
  auto bytes = make_idx({2}, [](std::size_t) { return 0; });
  bytes[2] = 0x0D;  // float
  EXPECT_NE(data_error_of([&] { parse_idx(bytes, "f"); }).find("element type"), std::string::npos);
}

TEST(Idx, TruncatedDataAndHeaderAreErrors) {
  auto bytes = make_idx({10, 28, 28}, [](std::size_t i) { return i; });
  auto cut = bytes;
  cut.resize(bytes.size() - 100);
  EXPECT_NE(data_error_of([&] { parse_idx(cut, "t"); }).find("truncated"), std::string::npos);
  cut.resize(10);
  EXPECT_NE(data_error_of([&] { parse_idx(cut, "t"); }).find("truncated"), std::string::npos);
  cut.resize(2);
  EXPECT_NE(data_error_of([&] { parse_idx(cut, "t"); }).find("truncated"), std::string::npos);
  auto extra = bytes;
  extra.push_back(1);
  EXPECT_NE(data_error_of([&] { parse_idx(extra, "t"); }).find("unexpected bytes"), std::string::npos);
}

TEST(Idx, TruncatedGzipStreamIsAnError) {
  TempDir dir;
  std::vector<std::uint8_t> noise(50000);
  for (std::size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<std::uint8_t>((i * 7919) >> 3);
  write_gz(dir / "full.gz", make_idx({50000}, [&](std::size_t i) { return noise[i]; }));
  std::ifstream in(dir / "full.gz", std::ios::binary);
  std::vector<std::uint8_t> gz((std::istreambuf_iterator<char>(in)), {});
  gz.resize(gz.size() / 2);
  write_bytes(dir / "half.gz", gz);
  data_error_of([&] { read_idx_file(dir / "half.gz"); });
}

TEST(Idx, MissingFileNamesIt) {
  EXPECT_NE(data_error_of([&] { read_idx_file("/nonexistent/x-idx3-ubyte"); }).find("/nonexistent/x-idx3-ubyte"),
            std::string::npos);
}

/// A CIFAR-10 batch of `n` records whose label is i % 10 and pixels are i.
std::vector<std::uint8_t> cifar_batch(int n) {
  std::vector<std::uint8_t> b;
  for (int i = 0; i < n; ++i) {
    b.push_back(static_cast<std::uint8_t>(i % 10));
    b.insert(b.end(), 3072, static_cast<std::uint8_t>(i));
  }
  return b;
}

TEST(Cifar10, AppendsRecords) {
  TempDir dir;
  write_bytes(dir / "data_batch_1.bin", cifar_batch(12));
  DatasetSplit split;
  append_cifar10_batch(dir / "data_batch_1.bin", split);
  EXPECT_EQ(split.count, 12);
  EXPECT_EQ(split.labels[11], 1);
  EXPECT_EQ(split.images.size(), 12u * 3072u);
  EXPECT_EQ(split.images[11 * 3072], 11);
}

TEST(Cifar10, TruncatedAndBadLabelsAreErrors) {
  TempDir dir;
  auto b = cifar_batch(3);
  b.pop_back();
  write_bytes(dir / "cut.bin", b);
  DatasetSplit split;
  EXPECT_NE(data_error_of([&] { append_cifar10_batch(dir / "cut.bin", split); }).find("truncated"), std::string::npos);
  b = cifar_batch(3);
  b[3073] = 11;
  write_bytes(dir / "label.bin", b);
  EXPECT_NE(data_error_of([&] { append_cifar10_batch(dir / "label.bin", split); }).find("label 11"), std::string::npos);
}

TEST(LoadDataset, FindsCifarUnderHomeDirDatasets) {
  TempDir home;
  auto folder = home / "datasets/cifar10/cifar-10-batches-bin";
  for (int i = 1; i <= 5; ++i) write_bytes(folder / ("data_batch_" + std::to_string(i) + ".bin"), cifar_batch(4));
  write_bytes(folder / "test_batch.bin", cifar_batch(3));
  Dataset d = load_dataset("cifar10", "/nonexistent", home.path());
  EXPECT_EQ(d.train.count, 20);
  EXPECT_EQ(d.test.count, 3);
  EXPECT_EQ(d.info.channels, 3);
}

TEST(LoadDataset, MnistFromIdxFilesAndMismatchedCounts) {
  TempDir data;
  auto images = [](std::uint32_t n) { return make_idx({n, 28, 28}, [](std::size_t i) { return i; }); };
  auto labels = [](std::uint32_t n) { return make_idx({n}, [](std::size_t i) { return i % 10; }); };
  write_gz(data / "mnist/train-images-idx3-ubyte.gz", images(6));
  write_bytes(data / "mnist/train-labels-idx1-ubyte", labels(6));
  write_gz(data / "mnist/t10k-images-idx3-ubyte.gz", images(4));
  write_gz(data / "mnist/t10k-labels-idx1-ubyte.gz", labels(3));
  std::string message = data_error_of([&] { load_dataset("mnist", data.path(), "/nonexistent"); });
  EXPECT_NE(message.find("t10k-labels"), std::string::npos) << message;
  write_gz(data / "mnist/t10k-labels-idx1-ubyte.gz", labels(4));
  Dataset d = load_dataset("mnist", data.path(), "/nonexistent");
  EXPECT_EQ(d.train.count, 6);
  EXPECT_EQ(d.test.count, 4);
}

TEST(LoadDataset, MissingFilesAreNamed) {
  TempDir empty;
  std::string message = data_error_of([&] { load_dataset("fashion-mnist", empty.path(), empty.path()); });
  EXPECT_NE(message.find("train-images-idx3-ubyte"), std::string::npos) << message;
}

}  // namespace
}  // namespace mlswarm
