#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace mlswarm {

/// The static facts of a dataset mlswarm knows how to load.
struct DatasetInfo {
  std::string name;
  int channels = 1;
  int height = 28;
  int width = 28;
  std::vector<std::string> class_names;
  std::int64_t train_size = 0;
  std::int64_t test_size = 0;
  std::string format;        ///< "idx", "cifar10-binary" or "folder"
  std::string content_hash;  ///< a folder dataset's, as registered (its manifest's); "" for built-ins
};

/// nullptr when `name` is not a known dataset.
const DatasetInfo* find_dataset_info(std::string_view name) noexcept;
std::vector<std::string> dataset_names();

/// One split: `count` images of C*H*W bytes each (channel-major, as the files store them)
/// and one label byte per image.
struct DatasetSplit {
  std::int64_t count = 0;
  std::vector<std::uint8_t> images;
  std::vector<std::uint8_t> labels;
};

struct Dataset {
  DatasetInfo info;
  DatasetSplit train;
  DatasetSplit test;
};

/// An IDX array (the MNIST file format): element type 0x08 (unsigned byte) only.
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

/// Reads an IDX file, gzipped or plain. Throws Error(kDataError) naming the file and what is
/// wrong: missing, wrong magic, unsupported element type, truncated, trailing bytes.
IdxArray read_idx_file(const std::filesystem::path& path);

/// Parses IDX bytes already in memory; `name` is used in error messages.
IdxArray parse_idx(const std::vector<std::uint8_t>& bytes, const std::string& name);

/// Appends the records of one CIFAR-10 binary batch file (1 label byte + 3072 pixel bytes
/// per record) to `split`. Throws Error(kDataError) for a missing or truncated file or a
/// label outside 0..9.
void append_cifar10_batch(const std::filesystem::path& path, DatasetSplit& split);

/// The same for a batch already in memory; `path` names it in errors.
void append_cifar10_records(const std::vector<std::uint8_t>& bytes, const std::filesystem::path& path,
                            DatasetSplit& split);

/// Where a dataset's files are looked for, in order: DATA_DIR/<name>, HOME_DIR/datasets/<name>
/// (and, for CIFAR-10, a cifar-10-batches-bin folder inside either).
std::vector<std::filesystem::path> dataset_search_dirs(const DatasetInfo& info, const std::filesystem::path& data_dir,
                                                       const std::filesystem::path& home_dir);

/// Loads both splits of a known dataset. Throws Error(kDataError) naming the first missing
/// or corrupt file, Error(kInvalidArgument) for an unknown name.
Dataset load_dataset(std::string_view name, const std::filesystem::path& data_dir,
                     const std::filesystem::path& home_dir);

/// Reads a whole file, gunzipping it when it is gzipped. Throws Error(kDataError) when the
/// file is missing, unreadable or larger than `max_bytes` once decompressed.
std::vector<std::uint8_t> read_maybe_gzipped(const std::filesystem::path& path, std::size_t max_bytes);

}  // namespace mlswarm
