#pragma once

// A raw TCP client for tests of the HTTP edge: exact bytes out (trickled, half-closed, from a
// chosen 127.x source address), whatever comes back, and whether the server closed.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>

namespace mlswarm::testing {

/// A raw client connection from `source` (any 127.x address) to host:port.
class RawClient {
 public:
  explicit RawClient(int port, const char* source = "127.0.0.1", const char* host = "127.0.0.1") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &from.sin_addr);
    ::bind(fd_, reinterpret_cast<const sockaddr*>(&from), sizeof from);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, host, &to.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0;
  }
  ~RawClient() { ::close(fd_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }
  bool send(std::string_view bytes) { return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) >= 0; }
  void half_close() { ::shutdown(fd_, SHUT_WR); }
  /// Without waiting: whether the server has closed (reading and dropping what came first).
  bool closed_now() {
    char buffer[4096];
    while (true) {
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) continue;
      return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    }
  }
  /// What arrives until the server closes, or `within` passes; `closed` says which.
  std::string read_until_closed(std::chrono::milliseconds within, bool* closed = nullptr) {
    std::string got;
    const auto until = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (::poll(&p, 1, static_cast<int>(std::max<long>(1, left.count()))) != 1) continue;
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) {
        if (closed != nullptr) *closed = true;
        return got;
      }
      got.append(buffer, static_cast<std::size_t>(n));
    }
    if (closed != nullptr) *closed = false;
    return got;
  }
  /// Reads until `text` has arrived (or `within` passes).
  std::string read_until(std::string_view text, std::chrono::milliseconds within) {
    std::string got;
    const auto until = std::chrono::steady_clock::now() + within;
    while (got.find(text) == std::string::npos && std::chrono::steady_clock::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) != 1) continue;
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      got.append(buffer, static_cast<std::size_t>(n));
    }
    return got;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

}  // namespace mlswarm::testing
