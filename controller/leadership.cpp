#include "leadership.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"

namespace mlswarm {

/// The lease file, open and exclusively locked for this object's life.
class Leadership::LockedFile {
 public:
  explicit LockedFile(const std::filesystem::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0) fail("open");
    int rc = 0;
    do {
      rc = ::flock(fd_, LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) fail("lock");
  }
  ~LockedFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  LockedFile(const LockedFile&) = delete;
  LockedFile& operator=(const LockedFile&) = delete;

  std::string read() const {
    std::string text(4096, '\0');
    const ssize_t n = ::pread(fd_, text.data(), text.size(), 0);
    text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return text;
  }
  void write(const std::string& text) const {
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
        ::fsync(fd_) != 0) {
      fail("write");
    }
  }

 private:
  [[noreturn]] void fail(const char* what) const {
    throw Error(ErrorCode::kUnavailable, fmt::format("cannot {} {}: {}", what, path_.string(), std::strerror(errno)));
  }
  std::filesystem::path path_;
  int fd_ = -1;
};

Leadership::Leadership(Options options) : options_(std::move(options)) {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  hostname_ = name;
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
}

Leadership::Lease Leadership::parse(const std::string& text) {
  // "term beat released host pid leader", one line; anything unreadable is no lease at all.
  Lease lease;
  std::istringstream in(text);
  int released = 0;
  if (!(in >> lease.term >> lease.beat >> released >> lease.host >> lease.pid >> lease.leader)) return Lease{};
  lease.released = released != 0;
  return lease;
}

std::string Leadership::format(const Lease& lease) {
  return fmt::format("{} {} {} {} {} {}\n", lease.term, lease.beat, lease.released ? 1 : 0, lease.host, lease.pid,
                     lease.leader);
}

bool Leadership::holder_is_gone(const Lease& lease) const {
  return lease.host == hostname_ && lease.pid > 0 && lease.pid != ::getpid() && ::kill(static_cast<pid_t>(lease.pid), 0) != 0 &&
         errno == ESRCH;
}

LeaderView Leadership::tick() {
  const auto now = std::chrono::steady_clock::now();
  LockedFile file(options_.dir / "leader.lock");
  Lease lease = parse(file.read());
  std::lock_guard lock(mutex_);
  if (my_term_ != 0 && lease.term == my_term_ && !lease.released) {
    ++lease.beat;  // still ours: renew
    file.write(format(lease));
    renewed_ = now;
  } else {
    if (my_term_ != 0) {
      spdlog::warn("controller: lost the lead of term {} to {} (term {})", my_term_, lease.leader, lease.term);
      my_term_ = 0;
    }
    if (lease.term != seen_term_ || lease.beat != seen_beat_) {
      seen_term_ = lease.term;
      seen_beat_ = lease.beat;
      seen_since_ = now;
    }
    const bool expired = now - seen_since_ >= options_.lease;
    if (lease.term == 0 || lease.released || expired || holder_is_gone(lease)) {
      const std::string previous = lease.leader;
      lease = Lease{lease.term + 1, options_.address, 0, false, hostname_, static_cast<long>(::getpid())};
      file.write(format(lease));
      my_term_ = lease.term;
      renewed_ = now;
      spdlog::info("controller: leading term {}{}", my_term_,
                   previous.empty() ? std::string() : fmt::format(" (after {})", previous));
    }
  }
  view_ = LeaderView{lease.term, lease.leader, my_term_ != 0 && my_term_ == lease.term};
  return view_;
}

LeaderView Leadership::view() const {
  std::lock_guard lock(mutex_);
  return view_;
}

bool Leadership::can_lead(std::uint64_t term) const {
  std::lock_guard lock(mutex_);
  return my_term_ != 0 && my_term_ == term &&
         std::chrono::steady_clock::now() - renewed_ < options_.lease - options_.retry;
}

bool Leadership::fenced(const std::function<void()>& write) {
  std::uint64_t term = 0;
  {
    std::lock_guard lock(mutex_);
    term = my_term_;
  }
  if (term == 0 || !can_lead(term)) return false;
  LockedFile file(options_.dir / "leader.lock");
  const Lease lease = parse(file.read());
  if (lease.term != term || lease.released) return false;
  write();
  return true;
}

void Leadership::release() {
  std::lock_guard lock(mutex_);
  if (my_term_ == 0) return;
  try {
    LockedFile file(options_.dir / "leader.lock");
    Lease lease = parse(file.read());
    if (lease.term == my_term_) {
      lease.released = true;
      file.write(format(lease));
      spdlog::info("controller: released the lead of term {}", my_term_);
    }
  } catch (const Error& e) {
    spdlog::warn("controller: could not release the lead: {}", e.what());
  }
  my_term_ = 0;
  view_.mine = false;
}

}  // namespace mlswarm
