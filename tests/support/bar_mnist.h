#pragma once

#include <filesystem>

#include "temp_dir.h"

namespace mlswarm::testing {

/// Writes a learnable synthetic MNIST (IDX files under dir/mnist): image i is of class i % 10,
/// a bright horizontal bar at row 2k+4 over faint noise. A convnet learns it in an epoch.
inline void write_bar_mnist(const std::filesystem::path& dir, std::uint32_t train, std::uint32_t test) {
  auto images = [](std::uint32_t n) {
    return make_idx({n, 28, 28}, [](std::size_t i) {
      std::size_t image = i / 784, row = (i % 784) / 28;
      return row == 2 * (image % 10) + 4 ? 200 + image % 50 : (i * 31) % 40;
    });
  };
  auto labels = [](std::uint32_t n) { return make_idx({n}, [](std::size_t i) { return i % 10; }); };
  write_bytes(dir / "mnist/train-images-idx3-ubyte", images(train));
  write_bytes(dir / "mnist/train-labels-idx1-ubyte", labels(train));
  write_bytes(dir / "mnist/t10k-images-idx3-ubyte", images(test));
  write_bytes(dir / "mnist/t10k-labels-idx1-ubyte", labels(test));
}

}  // namespace mlswarm::testing
