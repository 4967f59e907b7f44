#include "mlswarm/attempt_fence.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

/// A job's attempt fence: `attempt.lock`, open and locked for this object's life, and the
/// attempt number in `attempt`, which is never written in place: a new file is renamed over it,
/// so a write that fails (a full disk) leaves the old number, never an empty file that would let
/// a stale attempt through.
class LockedAttemptFile {
 public:
  /// `writer`: create the files' folder and lock exclusively; otherwise lock shared.
  LockedAttemptFile(const std::filesystem::path& job_dir, bool writer)
      : path_(job_dir / "attempt"), lock_path_(job_dir / "attempt.lock") {
    if (writer) {
      std::error_code ec;
      std::filesystem::create_directories(job_dir, ec);
    }
    fd_ = ::open(lock_path_.c_str(), (writer ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0 && !writer && errno == ENOENT) return;  // a job dir from before attempt.lock: read unlocked
    if (fd_ < 0) fail("open", lock_path_);
    int rc = 0;
    do {
      rc = ::flock(fd_, writer ? LOCK_EX : LOCK_SH);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) fail("lock", lock_path_);
  }
  ~LockedAttemptFile() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  LockedAttemptFile(const LockedAttemptFile&) = delete;
  LockedAttemptFile& operator=(const LockedAttemptFile&) = delete;

  int read() const {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT) return 0;
      fail("open", path_);
    }
    char text[32] = {};
    const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
    ::close(fd);
    if (n <= 0) return 0;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    return end == text || value < 0 || value > 1'000'000'000 ? 0 : static_cast<int>(value);
  }

  void write(int attempt) const { write_file_atomic(path_, std::to_string(attempt)); }

 private:
  [[noreturn]] static void fail(const char* what, const std::filesystem::path& path) {
    throw Error(ErrorCode::kInternal, fmt::format("cannot {} {}: {}", what, path.string(), std::strerror(errno)));
  }

  std::filesystem::path path_;
  std::filesystem::path lock_path_;
  int fd_ = -1;
};

[[noreturn]] void superseded(const std::filesystem::path& job_dir, int mine, int current) {
  throw Error(ErrorCode::kSuperseded, fmt::format("superseded: attempt {} of job {} started after this attempt {}",
                                                  current, job_dir.filename().string(), mine));
}

}  // namespace

AttemptFence::AttemptFence(std::filesystem::path job_dir, int attempt)
    : job_dir_(std::move(job_dir)), attempt_(attempt) {}

void AttemptFence::claim() const {
  LockedAttemptFile file(job_dir_, true);
  const int current = file.read();
  if (current > attempt_) superseded(job_dir_, attempt_, current);
  if (current != attempt_) file.write(attempt_);
}

void AttemptFence::start() const {
  LockedAttemptFile file(job_dir_, true);
  const int current = file.read();
  if (current > attempt_) superseded(job_dir_, attempt_, current);
  if (current == attempt_ && attempt_ > 0) {
    throw Error(ErrorCode::kConflict,
                fmt::format("attempt {} of job {} already started (a replayed or repeated dispatch)", attempt_,
                            job_dir_.filename().string()),
                "attempt");
  }
  file.write(attempt_);
}

void AttemptFence::guarded(const std::function<void()>& write) const {
  LockedAttemptFile file(job_dir_, true);
  const int current = file.read();
  if (current > attempt_) superseded(job_dir_, attempt_, current);
  write();
}

int AttemptFence::current(const std::filesystem::path& job_dir) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(job_dir / "attempt", ec)) return 0;
  return LockedAttemptFile(job_dir, false).read();
}

}  // namespace mlswarm
