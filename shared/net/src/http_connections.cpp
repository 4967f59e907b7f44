#include "http_connections.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "mlswarm/log.h"

namespace mlswarm {

using Clock = std::chrono::steady_clock;

struct ConnectionServer::Connection {
  explicit Connection(int socket) : fd(socket) {}
  ~Connection() {
    if (fd >= 0) {
      ::shutdown(fd, SHUT_RDWR);
      ::close(fd);
    }
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd;
  std::string buffer;          ///< read, not yet parsed: the head (and maybe more)
  Clock::time_point deadline;  ///< for the head (or, idle, for its first byte)
  bool got_bytes = false;
  std::size_t served = 0;  ///< requests answered on this connection
};

namespace {

/// Where a request head ends in `bytes` (CRLF CRLF, or a bare LF LF), or npos.
bool head_complete(const std::string& bytes) {
  return bytes.find("\r\n\r\n") != std::string::npos || bytes.find("\n\n") != std::string::npos;
}

/// A health probe, served by workers of its own.
bool is_probe(const std::string& head) {
  for (const char* p : {"GET /healthz", "GET /readyz"}) {
    const std::size_t n = std::strlen(p);
    if (head.size() > n && head.compare(0, n, p) == 0 && (head[n] == ' ' || head[n] == '?')) return true;
  }
  return false;
}

std::string address_text(const sockaddr_storage& addr, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    port = ntohs(a->sin6_port);
  }
  return text;
}

/// Appends what `fd` has ready (without waiting) to `buffer`, up to about `limit` bytes.
/// False when the peer closed the connection or it broke.
bool read_ready(int fd, std::string& buffer, std::size_t limit) {
  char chunk[16384];
  while (buffer.size() < limit) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      buffer.append(chunk, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
  }
  return true;
}

/// The socket of one request as httplib's process_request sees it: the bytes already read
/// first, then the socket, every wait bounded by the I/O timeout and by a deadline for the
/// whole body (reads) and the whole reply (writes, counted from the first).
class DeadlineStream final : public httplib::Stream {
 public:
  /// `halting`: the server is shutting down; a wait that sees no progress for 100 ms then ends.
  DeadlineStream(int fd, std::string buffered, const ConnectionLimits& limits, const std::atomic<bool>& halting)
      : fd_(fd),
        buffer_(std::move(buffered)),
        limits_(limits),
        halting_(halting),
        read_deadline_(Clock::now() + limits.request_timeout) {}

  bool is_readable() const override { return pos_ < buffer_.size() || wait(POLLIN, read_deadline_); }
  bool is_writable() const override { return wait(POLLOUT, write_deadline()); }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ < buffer_.size()) return take(ptr, size);
    buffer_.clear();
    pos_ = 0;
    for (;;) {
      // Small reads (httplib reads a head byte by byte) go through the buffer.
      const bool direct = size >= kChunk;
      if (!direct) buffer_.resize(kChunk);
      const ssize_t n = ::recv(fd_, direct ? ptr : buffer_.data(), direct ? size : kChunk, MSG_DONTWAIT);
      if (n > 0 && direct) return n;
      if (n > 0) {
        buffer_.resize(static_cast<std::size_t>(n));
        return take(ptr, size);
      }
      if (!direct) buffer_.clear();
      if (n == 0) return 0;
      if (errno == EINTR) continue;
      if ((errno != EAGAIN && errno != EWOULDBLOCK) || !wait(POLLIN, read_deadline_)) return fail();
    }
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!write_deadline_) write_deadline_ = Clock::now() + limits_.request_timeout;
    for (;;) {
      const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if ((errno != EAGAIN && errno != EWOULDBLOCK) || !wait(POLLOUT, *write_deadline_)) return fail();
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) ip = address_text(addr, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) ip = address_text(addr, port);
  }
  socket_t socket() const override { return fd_; }

  /// Bytes read past the request (a pipelined next request).
  std::string leftover() const { return pos_ < buffer_.size() ? buffer_.substr(pos_) : std::string(); }
  /// A read or write timed out or failed: the connection is out of step and must close.
  bool broken() const { return broken_; }

 private:
  static constexpr std::size_t kChunk = 4096;

  ssize_t fail() {
    broken_ = true;
    return -1;
  }

  ssize_t take(char* ptr, size_t size) {
    const std::size_t n = std::min(size, buffer_.size() - pos_);
    std::memcpy(ptr, buffer_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  Clock::time_point write_deadline() const {
    return write_deadline_ ? *write_deadline_ : Clock::now() + limits_.request_timeout;
  }

  /// Waits until the socket is ready for `events`, at most the I/O timeout and never past
  /// `deadline`; during a shutdown, at most 100 ms without progress (so a stalled client
  /// cannot hold SIGTERM up). False on a timeout or an error.
  bool wait(short events, Clock::time_point deadline) const {
    const auto give_up = std::min(deadline, Clock::now() + limits_.io_timeout);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, events, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min(left, std::chrono::milliseconds(100)).count()));
      if (rc > 0) return (p.revents & (events | POLLHUP | POLLERR)) != 0;
      if ((rc < 0 && errno != EINTR) || (rc == 0 && halting_)) return false;
    }
  }

  int fd_;
  std::string buffer_;
  std::size_t pos_ = 0;
  const ConnectionLimits& limits_;
  const std::atomic<bool>& halting_;
  Clock::time_point read_deadline_;
  std::optional<Clock::time_point> write_deadline_;
  bool broken_ = false;
};

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

}  // namespace

ConnectionServer::ConnectionServer(ConnectionLimits limits) : limits_(limits) {}

ConnectionServer::~ConnectionServer() {
  halt();
  const socket_t fd = svr_sock_.exchange(INVALID_SOCKET);
  if (fd != INVALID_SOCKET) ::close(fd);
}

void ConnectionServer::halt() {
  halting_ = true;
  std::lock_guard lock(returned_mutex_);
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }
}

void ConnectionServer::give_back(std::unique_ptr<Connection> connection) {
  std::lock_guard lock(returned_mutex_);
  if (halting_ || wake_fd_ < 0) return;  // closes it
  returned_.push_back(std::move(connection));
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void ConnectionServer::linger_for_next(Connection& c) const {
  if (limits_.linger.count() <= 0) return;
  pollfd p{c.fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limits_.linger.count())) <= 0) return;
  read_ready(c.fd, c.buffer, limits_.max_head_bytes);  // EOF and errors: the accept thread sees them
}

void ConnectionServer::run_request(std::unique_ptr<Connection> c) {
  try {
    for (;;) {
      const bool last = c->served + 1 >= limits_.max_requests_per_connection || halting_;
      DeadlineStream stream(c->fd, std::move(c->buffer), limits_, halting_);
      bool closed = false;
      const bool ok = process_request(stream, last, closed, nullptr);
      ++c->served;
      if (!ok || closed || last || halting_ || stream.broken()) return;
      c->buffer = stream.leftover();
      // A busy client's next request often follows within a moment: waiting that moment here
      // saves the trip through the accept thread (two wake-ups, four system calls).
      if (!head_complete(c->buffer)) linger_for_next(*c);
      c->got_bytes = !c->buffer.empty();
      c->deadline = Clock::now() + (c->got_bytes ? limits_.head_timeout : limits_.idle_timeout);
      if (!head_complete(c->buffer) && c->buffer.size() < limits_.max_head_bytes) {
        give_back(std::move(c));
        return;
      }
      // A pipelined request already complete: answer it here.
    }
  } catch (const std::exception& e) {
    spdlog::error("http: a connection ended by an exception: {}", e.what());
  } catch (...) {
    spdlog::error("http: a connection ended by an unknown exception");
  }
}

/// The accept thread's state for one serve(): the epoll set, the connections waiting for
/// their heads, and the two worker pools. Used by that thread alone (workers only enqueue
/// kept-alive connections through give_back and the wake fd).
class ConnectionServer::Loop {
 public:
  Loop(ConnectionServer& server, int listen_fd, int ep, int wake)
      : server_(server),
        limits_(server.limits_),
        listen_fd_(listen_fd),
        ep_(ep),
        wake_(wake),
        workers_(static_cast<std::size_t>(std::max(1, limits_.threads))),
        probes_(static_cast<std::size_t>(std::max(1, limits_.probe_threads))) {
    add(listen_fd_, EPOLLIN);
    add(wake_, EPOLLIN);
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  /// Until halt(): waits for events, handles them, closes heads past their deadline.
  void run() {
    std::vector<epoll_event> events(256);
    auto last_sweep = Clock::now();
    while (!server_.halting_) {
      const int n = ::epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 100);
      if (n < 0 && errno != EINTR) {
        spdlog::error("http: the accept loop failed: {}", std::strerror(errno));
        break;
      }
      for (int i = 0; i < n; ++i) handle(events[static_cast<std::size_t>(i)].data.fd);
      if (Clock::now() - last_sweep >= std::chrono::milliseconds(100)) {
        last_sweep = Clock::now();
        sweep(last_sweep);
      }
    }
  }

  /// Closes what waits; the workers finish the requests they hold (their connections close).
  void finish() {
    server_.halting_ = true;
    const socket_t fd = server_.svr_sock_.exchange(INVALID_SOCKET);
    if (fd != INVALID_SOCKET) ::close(fd);
    waiting_.clear();
    workers_.shutdown();
    probes_.shutdown();
  }

 private:
  bool add(int fd, std::uint32_t events) {
    epoll_event e{};
    e.events = events;
    e.data.fd = fd;
    return ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &e) == 0;
  }

  void handle(int fd) {
    if (fd == listen_fd_) {
      accept_all();
    } else if (fd == wake_) {
      take_returned();
    } else {
      receive(fd);
    }
  }

  void accept_all() {
    for (;;) {
      const int s = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (s < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          if (log_allowed("http accept fds", std::chrono::seconds(60))) {
            spdlog::warn("http: cannot accept connections: {} ({} waiting for their request)", std::strerror(errno),
                         waiting_.size());
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(10));  // not a busy loop at the limit
        }
        return;
      }
      if (waiting_.size() >= limits_.max_waiting) {
        ::close(s);
        continue;
      }
      const int one = 1;
      ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Connection>(s);
      c->deadline = Clock::now() + limits_.head_timeout;
      watch(std::move(c));
    }
  }

  /// Kept-alive connections back from the workers.
  void take_returned() {
    std::uint64_t count = 0;
    [[maybe_unused]] const ssize_t r = ::read(wake_, &count, sizeof count);
    std::deque<std::unique_ptr<Connection>> back;
    {
      std::lock_guard lock(server_.returned_mutex_);
      back.swap(server_.returned_);
    }
    for (auto& c : back) watch(std::move(c));
  }

  bool ready(const Connection& c) const { return head_complete(c.buffer) || c.buffer.size() >= limits_.max_head_bytes; }

  /// A connection whose head is complete goes to a worker; any other waits for more bytes.
  void watch(std::unique_ptr<Connection> c) {
    if (ready(*c)) return dispatch(std::move(c));
    if (add(c->fd, EPOLLIN | EPOLLRDHUP)) waiting_.emplace(c->fd, std::move(c));
  }

  void dispatch(std::unique_ptr<Connection> c) {
    Connection* raw = c.release();  // the pools take copyable functions; the worker owns it again
    ConnectionServer& server = server_;
    (is_probe(raw->buffer) ? probes_ : workers_).enqueue([&server, raw] {
      server.run_request(std::unique_ptr<Connection>(raw));
    });
  }

  /// Reads what a waiting connection sent; hands it on once its head is complete.
  void receive(int fd) {
    auto it = waiting_.find(fd);
    if (it == waiting_.end()) return;
    Connection& c = *it->second;
    const std::size_t before = c.buffer.size();
    const bool open = read_ready(fd, c.buffer, limits_.max_head_bytes);
    if (!c.got_bytes && c.buffer.size() > before) {
      c.got_bytes = true;
      c.deadline = Clock::now() + limits_.head_timeout;
    }
    if (!open) {
      forget(it);  // closed by the peer, or broken
    } else if (ready(c)) {
      dispatch(forget(it));
    }
  }

  std::unique_ptr<Connection> forget(std::map<int, std::unique_ptr<Connection>>::iterator it) {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, it->first, nullptr);
    auto c = std::move(it->second);
    waiting_.erase(it);
    return c;
  }

  /// Closes every connection whose head (or, idle, whose next request) is late.
  void sweep(Clock::time_point now) {
    std::size_t slow = 0;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      auto next = std::next(it);
      if (now >= it->second->deadline) slow += forget(it)->got_bytes ? 1 : 0;
      it = next;
    }
    if (slow == 0) return;
    server_.slow_heads_closed_ += slow;
    if (log_allowed("http slow heads", std::chrono::seconds(60))) {
      spdlog::warn("http: closed {} connection(s) whose request head did not arrive within {} ms ({} so far)", slow,
                   limits_.head_timeout.count(), server_.slow_heads_closed_.load());
    }
  }

  ConnectionServer& server_;
  const ConnectionLimits& limits_;
  int listen_fd_;
  int ep_;
  int wake_;
  std::map<int, std::unique_ptr<Connection>> waiting_;
  httplib::ThreadPool workers_;
  httplib::ThreadPool probes_;
};

bool ConnectionServer::serve() {
  const int listen_fd = svr_sock_;
  if (listen_fd == INVALID_SOCKET) return false;
  set_nonblocking(listen_fd);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  const int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ep < 0 || wake < 0) {
    spdlog::error("http: cannot start the accept loop: {}", std::strerror(errno));
    if (ep >= 0) ::close(ep);
    if (wake >= 0) ::close(wake);
    return false;
  }
  {
    std::lock_guard lock(returned_mutex_);
    wake_fd_ = wake;
  }
  {
    Loop loop(*this, listen_fd, ep, wake);
    loop.run();
    loop.finish();
  }
  {
    std::lock_guard lock(returned_mutex_);
    returned_.clear();
    wake_fd_ = -1;
  }
  ::close(wake);
  ::close(ep);
  return true;
}

}  // namespace mlswarm
