#include "mlswarm/dataset.h"

#include <array>
#include <fstream>
#include <memory>

#include <fmt/format.h>
#include <fmt/std.h>
#include <zlib.h>

#include "mlswarm/error.h"
#include "mlswarm/folder_dataset.h"

namespace mlswarm {
namespace fs = std::filesystem;
namespace {

constexpr std::size_t kMaxDatasetFileBytes = std::size_t{1} << 30;

const std::vector<DatasetInfo>& known_datasets() {
  static const std::vector<DatasetInfo> kDatasets = {
      {"fashion-mnist",
       1,
       28,
       28,
       {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"},
       60000,
       10000,
       "idx",
       ""},
      {"mnist", 1, 28, 28, {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, 60000, 10000, "idx", ""},
      {"cifar10",
       3,
       32,
       32,
       {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"},
       50000,
       10000,
       "cifar10-binary",
       ""},
  };
  return kDatasets;
}

[[noreturn]] void data_error(const fs::path& path, std::string_view what) {
  throw Error(ErrorCode::kDataError, fmt::format("{}: {}", path.string(), what));
}

std::int64_t read_be32(const std::vector<std::uint8_t>& b, std::size_t at) {
  return (std::int64_t{b[at]} << 24) | (std::int64_t{b[at + 1]} << 16) | (std::int64_t{b[at + 2]} << 8) |
         std::int64_t{b[at + 3]};
}

/// The first existing file among `dir/name` and `dir/name.gz` over all dirs.
fs::path find_file(const std::vector<fs::path>& dirs, const std::string& name) {
  for (const auto& dir : dirs) {
    for (const auto& candidate : {dir / name, dir / (name + ".gz")}) {
      std::error_code ec;
      if (fs::is_regular_file(candidate, ec)) return candidate;
    }
  }
  std::string tried;
  for (const auto& dir : dirs) tried += fmt::format("{}{}/{}[.gz]", tried.empty() ? "" : ", ", dir.string(), name);
  throw Error(ErrorCode::kDataError, fmt::format("dataset file {} not found (looked for {})", name, tried));
}

DatasetSplit load_idx_split(const std::vector<fs::path>& dirs, const DatasetInfo& info, const std::string& images_name,
                            const std::string& labels_name) {
  fs::path images_path = find_file(dirs, images_name);
  IdxArray images = read_idx_file(images_path);
  fs::path labels_path = find_file(dirs, labels_name);
  IdxArray labels = read_idx_file(labels_path);
  if (images.dims.size() != 3 || images.dims[1] != info.height || images.dims[2] != info.width) {
    data_error(images_path, fmt::format("expected images of shape [N][{}][{}]", info.height, info.width));
  }
  if (labels.dims.size() != 1) data_error(labels_path, "expected a one-dimensional label array");
  if (labels.dims[0] != images.dims[0]) {
    data_error(labels_path,
               fmt::format("{} labels for {} images in {}", labels.dims[0], images.dims[0], images_path.string()));
  }
  for (std::uint8_t label : labels.data) {
    if (label >= info.class_names.size()) {
      data_error(labels_path, fmt::format("label {} outside 0..{}", label, info.class_names.size() - 1));
    }
  }
  DatasetSplit split;
  split.count = images.dims[0];
  split.images = std::move(images.data);
  split.labels = std::move(labels.data);
  return split;
}

}  // namespace

const DatasetInfo* find_dataset_info(std::string_view name) noexcept {
  for (const auto& info : known_datasets()) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

std::vector<std::string> dataset_names() {
  std::vector<std::string> names;
  for (const auto& info : known_datasets()) names.push_back(info.name);
  return names;
}

std::vector<std::uint8_t> read_maybe_gzipped(const fs::path& path, std::size_t max_bytes) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) data_error(path, "file not found");
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) data_error(path, "cannot open file");
  std::unique_ptr<gzFile_s, decltype(&gzclose)> guard(file, &gzclose);
  gzbuffer(file, 1 << 17);
  std::vector<std::uint8_t> bytes;
  std::array<std::uint8_t, 1 << 16> chunk{};
  while (true) {
    int n = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      const char* message = gzerror(file, &code);
      data_error(path, fmt::format("corrupt gzip data ({})", message ? message : "unknown"));
    }
    if (n == 0) break;
    if (bytes.size() + static_cast<std::size_t>(n) > max_bytes) {
      data_error(path, fmt::format("larger than the limit of {} bytes", max_bytes));
    }
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  // zlib reports a gzip stream cut short as a clean end of file; gzclose_r tells.
  int code = 0;
  gzerror(file, &code);
  if (code != Z_OK && code != Z_BUF_ERROR) data_error(path, "corrupt gzip data");
  if (gzclose_r(guard.release()) == Z_BUF_ERROR) data_error(path, "truncated gzip stream");
  return bytes;
}

IdxArray parse_idx(const std::vector<std::uint8_t>& b, const std::string& name) {
  const fs::path path(name);
  if (b.size() < 4) data_error(path, fmt::format("truncated IDX header ({} bytes)", b.size()));
  if (b[0] != 0 || b[1] != 0) {
    data_error(path,
               fmt::format("wrong magic number 0x{:02x}{:02x}{:02x}{:02x}: not an IDX file", b[0], b[1], b[2], b[3]));
  }
  if (b[2] != 0x08) {
    data_error(path, fmt::format("unsupported IDX element type 0x{:02x} (only 0x08, unsigned byte)", b[2]));
  }
  std::size_t ndims = b[3];
  if (ndims == 0 || ndims > 4) data_error(path, fmt::format("unsupported IDX rank {}", ndims));
  if (b.size() < 4 + 4 * ndims) data_error(path, "truncated IDX header");
  IdxArray out;
  std::uint64_t elements = 1;
  for (std::size_t i = 0; i < ndims; ++i) {
    std::int64_t d = read_be32(b, 4 + 4 * i);
    if (d <= 0 || d > (std::int64_t{1} << 30)) data_error(path, fmt::format("bad IDX dimension {}", d));
    out.dims.push_back(d);
    elements *= static_cast<std::uint64_t>(d);
    if (elements > kMaxDatasetFileBytes) data_error(path, "IDX array larger than the limit");
  }
  std::size_t header = 4 + 4 * ndims;
  if (b.size() - header < elements) {
    data_error(path,
               fmt::format("truncated: header promises {} bytes of data, file has {}", elements, b.size() - header));
  }
  if (b.size() - header > elements) {
    data_error(path, fmt::format("{} unexpected bytes after the data", b.size() - header - elements));
  }
  out.data.assign(b.begin() + static_cast<std::ptrdiff_t>(header), b.end());
  return out;
}

IdxArray read_idx_file(const fs::path& path) {
  return parse_idx(read_maybe_gzipped(path, kMaxDatasetFileBytes + 64), path.string());
}

void append_cifar10_batch(const fs::path& path, DatasetSplit& split) {
  append_cifar10_records(read_maybe_gzipped(path, kMaxDatasetFileBytes), path, split);
}

void append_cifar10_records(const std::vector<std::uint8_t>& bytes, const fs::path& path, DatasetSplit& split) {
  constexpr std::size_t kRecord = 1 + 3 * 32 * 32;
  if (bytes.empty()) data_error(path, "empty CIFAR-10 batch file");
  if (bytes.size() % kRecord != 0) {
    data_error(path,
               fmt::format("truncated: {} bytes is not a whole number of {}-byte records", bytes.size(), kRecord));
  }
  std::size_t records = bytes.size() / kRecord;
  split.images.reserve(split.images.size() + records * (kRecord - 1));
  for (std::size_t r = 0; r < records; ++r) {
    const std::uint8_t* record = bytes.data() + r * kRecord;
    if (record[0] > 9) data_error(path, fmt::format("record {}: label {} outside 0..9", r, record[0]));
    split.labels.push_back(record[0]);
    split.images.insert(split.images.end(), record + 1, record + kRecord);
  }
  split.count += static_cast<std::int64_t>(records);
}

std::vector<fs::path> dataset_search_dirs(const DatasetInfo& info, const fs::path& data_dir, const fs::path& home_dir) {
  std::vector<fs::path> dirs;
  for (const fs::path& root : {data_dir, home_dir / "datasets"}) {
    if (root.empty()) continue;
    dirs.push_back(root / info.name);
    if (info.name == "cifar10") dirs.push_back(root / info.name / "cifar-10-batches-bin");
  }
  return dirs;
}

Dataset load_dataset(std::string_view name, const fs::path& data_dir, const fs::path& home_dir) {
  const DatasetInfo* info = find_dataset_info(name);
  if (info == nullptr) {
    auto manifest = read_folder_manifest(home_dir, std::string(name));
    if (!manifest) throw Error(ErrorCode::kInvalidArgument, fmt::format("unknown dataset '{}'", name), "dataset");
    return load_folder_dataset(home_dir, *manifest);
  }
  Dataset dataset;
  dataset.info = *info;
  auto dirs = dataset_search_dirs(*info, data_dir, home_dir);
  if (info->format == "idx") {
    dataset.train = load_idx_split(dirs, *info, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    dataset.test = load_idx_split(dirs, *info, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
  } else {
    for (int i = 1; i <= 5; ++i) {
      append_cifar10_batch(find_file(dirs, fmt::format("data_batch_{}.bin", i)), dataset.train);
    }
    append_cifar10_batch(find_file(dirs, "test_batch.bin"), dataset.test);
  }
  return dataset;
}

}  // namespace mlswarm
