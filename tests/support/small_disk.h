#pragma once

// A small tmpfs for the tests that need a full disk (mounting needs root: CI runs as root).

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <string>
#include <thread>

namespace mlswarm::testing {

/// A tmpfs of `size` mounted on a fresh folder, and a file that fills it.
class SmallDisk {
 public:
  SmallDisk(const std::filesystem::path& dir, const char* size) : dir_(dir) {
    std::filesystem::create_directories(dir_);
    const std::string options = std::string("size=") + size + ",mode=0755";
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) == 0;
  }
  ~SmallDisk() {
    free();
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
  bool mounted() const { return mounted_; }
  const std::filesystem::path& path() const { return dir_; }

  /// Writes a file until the disk is full, and keeps writing (as a trainer's checkpoint does on
  /// the shared mount): every page that comes free is taken at once. Until free().
  void fill() {
    const int fd = ::open((dir_ / "filler").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    const std::string block(4096, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    const int error = errno;
    while (::write(fd, "x", 1) == 1) {  // the last partial page too
    }
    EXPECT_EQ(error, ENOSPC);
    stop_ = false;
    writer_ = std::thread([this, fd] {
      const std::string page(4096, 'y');
      while (!stop_) (void)!::write(fd, page.data(), page.size());
      ::close(fd);
    });
  }
  void free() {
    stop_ = true;
    if (writer_.joinable()) writer_.join();
    std::error_code ec;
    std::filesystem::remove(dir_ / "filler", ec);
  }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
  std::atomic<bool> stop_{false};
  std::thread writer_;
};

}  // namespace mlswarm::testing
