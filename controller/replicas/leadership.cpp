#include "leadership.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"

namespace mlswarm {

/// The lock file `leader.lock`, open and exclusively locked for this object's life. Its content
/// is no longer written: the lease lives in `leader.lease`, replaced by rename (below). It is read
/// only as a lease from before that change (a rolling upgrade: an older replica still leading).
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

 private:
  [[noreturn]] void fail(const char* what) const {
    throw Error(ErrorCode::kUnavailable, fmt::format("cannot {} {}: {}", what, path_.string(), std::strerror(errno)));
  }
  std::filesystem::path path_;
  int fd_ = -1;
};

namespace {

/// The lease file's text, or nullopt when there is none.
std::optional<std::string> read_lease_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw Error(ErrorCode::kUnavailable, fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)));
  }
  std::string text(4096, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  ::close(fd);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return text;
}

}  // namespace

Leadership::Lease Leadership::read_lease(const LockedFile& lock) const {
  // leader.lease when it exists; before the first lease of this version, what an older
  // version left in leader.lock (followed, never written).
  if (auto text = read_lease_file(options_.dir / "leader.lease")) return parse(*text);
  return parse(lock.read());
}

void Leadership::write_lease(const Lease& lease) const {
  // A new file renamed over the old: a failed write (a full disk) leaves the old lease whole.
  try {
    write_file_atomic(options_.dir / "leader.lease", format(lease));
  } catch (const Error& e) {
    throw Error(ErrorCode::kUnavailable, e.what());
  }
}

void Leadership::set_term_floor(std::function<std::uint64_t()> floor) {
  std::lock_guard lock(mutex_);
  term_floor_ = std::move(floor);
}

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
  return lease.host == hostname_ && lease.pid > 0 && lease.pid != ::getpid() &&
         ::kill(static_cast<pid_t>(lease.pid), 0) != 0 && errno == ESRCH;
}

LeaderView Leadership::tick() {
  const auto now = std::chrono::steady_clock::now();
  // The highest term the journal holds, read before any lock (it reads the journal): a new term
  // is greater than every term in the lease or the journal, even when the lease file was lost.
  std::function<std::uint64_t()> floor_of_journal;
  {
    std::lock_guard lock(mutex_);
    if (my_term_ == 0) floor_of_journal = term_floor_;
  }
  const std::uint64_t journal_floor = floor_of_journal ? floor_of_journal() : 0;
  LockedFile file(options_.dir / "leader.lock");
  Lease lease = read_lease(file);
  std::lock_guard lock(mutex_);
  highest_term_ = std::max({highest_term_, lease.term, journal_floor});
  if (my_term_ != 0 && lease.term == my_term_ && !lease.released) {
    ++lease.beat;  // still ours: renew
    try {
      write_lease(lease);
    } catch (const Error& e) {
      // A leader that cannot renew stops acting at once; the lease on file stays as it was
      // and expires, and whoever takes over (this process too, once the disk has room) starts
      // a higher term.
      spdlog::error("controller: cannot renew the lead of term {} ({}); stepping down", my_term_, e.what());
      my_term_ = 0;
      view_ = LeaderView{lease.term, lease.leader, false};
      return view_;
    }
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
      Lease next{highest_term_ + 1, options_.address, 0, false, hostname_, static_cast<long>(::getpid())};
      write_lease(next);  // throws when it cannot: nothing changed, this process still follows
      lease = next;
      highest_term_ = lease.term;
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
  const Lease lease = read_lease(file);
  if (lease.term != term || lease.released) return false;
  write();
  return true;
}

void Leadership::release() {
  std::lock_guard lock(mutex_);
  if (my_term_ == 0) return;
  try {
    LockedFile file(options_.dir / "leader.lock");
    Lease lease = read_lease(file);
    if (lease.term == my_term_) {
      lease.released = true;
      write_lease(lease);
      spdlog::info("controller: released the lead of term {}", my_term_);
    }
  } catch (const Error& e) {
    spdlog::warn("controller: could not release the lead: {}", e.what());
  }
  my_term_ = 0;
  view_.mine = false;
}

}  // namespace mlswarm
