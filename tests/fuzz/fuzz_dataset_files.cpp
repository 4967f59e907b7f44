// Dataset files a user drops into HOME_DIR/datasets: IDX headers and bodies (plain or
// gzipped, through the same reader as the loader) and CIFAR-10 batches. The first byte
// picks the reader.

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mlswarm/dataset.h"
#include "mlswarm/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  if (size == 0) return 0;
  const std::vector<std::uint8_t> bytes(data + 1, data + size);
  try {
    switch (data[0] % 3) {
      case 0: {
        IdxArray array = parse_idx(bytes, "fuzz-idx");
        (void)array;
        break;
      }
      case 1: {
        DatasetSplit split;
        append_cifar10_records(bytes, "fuzz-cifar", split);
        if (split.images.size() != static_cast<std::size_t>(split.count) * 3 * 32 * 32) __builtin_trap();
        break;
      }
      default: {
        // Through a file, so that the gzip path of read_idx_file runs too.
        static const std::filesystem::path path =
            std::filesystem::temp_directory_path() / ("mlswarm-fuzz-" + std::to_string(::getpid()) + ".idx.gz");
        std::ofstream(path, std::ios::binary | std::ios::trunc)
            .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        IdxArray array = read_idx_file(path);
        (void)array;
        break;
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
