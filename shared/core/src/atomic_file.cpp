#include "mlswarm/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <zlib.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void io_error(const fs::path& path, std::string_view what, int err) {
  throw Error(err == ENOSPC || err == EDQUOT ? ErrorCode::kNoSpace : ErrorCode::kInternal,
              fmt::format("{}: {}: {}", path.string(), what, std::strerror(err)));
}

void fsync_directory(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) io_error(dir, "open directory", errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) io_error(dir, "fsync directory", err);
}

}  // namespace

void write_file_atomic(const fs::path& path, std::string_view data) {
  static std::atomic<unsigned> counter{0};
  fs::path dir = path.parent_path();
  std::error_code ec;
  if (!dir.empty()) fs::create_directories(dir, ec);
  fs::path tmp = path;
  tmp += fmt::format(".tmp.{}.{}", ::getpid(), counter.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_error(tmp, "create", errno);
  const char* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      io_error(tmp, "write", err);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    io_error(tmp, "fsync", err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    io_error(path, "rename", err);
  }
  fsync_directory(dir);
}

namespace {

constexpr std::string_view kSealMagic = "MLSWSEAL";

void put_le(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::uint64_t get_le(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= std::uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return value;
}

}  // namespace

std::string seal(std::string_view payload) {
  std::string out(kSealMagic);
  put_le(out, crc32_of(payload), 4);
  put_le(out, payload.size(), 8);
  out.append(payload);
  return out;
}

std::string unseal(std::string_view sealed, std::string_view what) {
  const std::size_t header = kSealMagic.size() + 12;
  if (sealed.size() < header || sealed.substr(0, kSealMagic.size()) != kSealMagic) {
    throw Error(ErrorCode::kDataError, fmt::format("{}: not a sealed file (wrong magic or too short)", what));
  }
  auto crc = static_cast<std::uint32_t>(get_le(sealed, kSealMagic.size(), 4));
  std::uint64_t size = get_le(sealed, kSealMagic.size() + 4, 8);
  if (sealed.size() - header != size) {
    throw Error(ErrorCode::kDataError,
                fmt::format("{}: truncated ({} of {} payload bytes)", what, sealed.size() - header, size));
  }
  std::string_view payload = sealed.substr(header);
  if (crc32_of(payload) != crc) throw Error(ErrorCode::kDataError, fmt::format("{}: CRC mismatch", what));
  return std::string(payload);
}

std::string read_file(const fs::path& path, std::size_t max_bytes) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) throw Error(ErrorCode::kDataError, fmt::format("{}: {}", path.string(), ec.message()));
  if (size > max_bytes) {
    throw Error(ErrorCode::kDataError,
                fmt::format("{}: {} bytes is over the limit of {}", path.string(), size, max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kDataError, fmt::format("{}: cannot open", path.string()));
  std::ostringstream out;
  out << in.rdbuf();
  return std::move(out).str();
}

std::uint32_t crc32_of(std::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
  std::size_t left = bytes.size();
  while (left > 0) {
    auto chunk = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    left -= chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

}  // namespace mlswarm
