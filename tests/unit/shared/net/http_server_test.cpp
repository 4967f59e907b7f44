// HttpServer against real sockets on loopback.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include <gtest/gtest.h>

#include "mlswarm/http_server.h"

namespace mlswarm {
namespace {

// A burst of clients connecting at once must find room in the accept queue: httplib listens
// with a backlog of 5, so before the server widened it the 7th and later handshakes of a burst
// were dropped (a second's SYN retry each, or a failed connection under load). The server is
// bound but not accepting, so only the kernel's queue holds the connections.
TEST(HttpServer, ABurstOfConnectionsFitsTheAcceptQueue) {
  HttpService service;
  service.handle = [](const HttpRequest&) { return HttpReply{}; };
  HttpServer server(service, HttpServerOptions{});
  server.bind("127.0.0.1", 0);

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(server.port()));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  constexpr int kClients = 64;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << "connect " << i << ": errno " << errno;
  }
  // A handshake the queue holds completes within microseconds on loopback; a dropped SYN is
  // retried only after a second. Half a second tells them apart.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  int connected = 0;
  for (const int fd : fds) {
    pollfd p{fd, POLLOUT, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count()))) == 1 && (p.revents & POLLOUT) != 0) {
      int error = -1;
      socklen_t len = sizeof error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
      connected += error == 0 ? 1 : 0;
    }
  }
  for (const int fd : fds) ::close(fd);
  EXPECT_EQ(connected, kClients);
}

}  // namespace
}  // namespace mlswarm
