#pragma once

// Internal to the shared library: the plain-HTTP server's own accept loop, which keeps slow
// clients from holding HTTP threads (HttpServer uses it; the TLS server keeps httplib's).

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

namespace mlswarm {

struct ConnectionLimits {
  int threads = 8;                                    ///< workers for requests
  int probe_threads = 1;                              ///< workers for GET /healthz and /readyz only
  std::chrono::milliseconds head_timeout{10'000};     ///< a whole request head, from its first byte
  std::chrono::milliseconds idle_timeout{5'000};      ///< a kept-alive connection waiting for its next request
  std::chrono::milliseconds request_timeout{60'000};  ///< a whole body read, and a whole reply written
  std::chrono::milliseconds io_timeout{10'000};       ///< one read or write making no progress
  std::size_t max_head_bytes = 64u << 10;             ///< a head still open at this size goes to httplib (431/400)
  std::size_t max_waiting = 10'000;                   ///< connections waiting for a head; more are closed at once
  std::size_t max_requests_per_connection = 1000;
  /// After a reply, how long a worker waits for the connection's next request before handing
  /// it back to the accept thread. Measured on 2 cores, 404s to `mlswarm load` (closed loop):
  /// without it 30% fewer requests/s than httplib's own loop; 2 ms: -4% at 16 clients, -18% at
  /// 64; 10 ms: +6% and +5% (50 ms: the same as 10).
  std::chrono::milliseconds linger{10};
};

/// cpp-httplib's Server (its parsing, routing and replies: process_request) behind an accept
/// loop of mlswarm's own. httplib 0.11 hands every accepted connection to a worker thread,
/// which then waits for the request with a timeout per read, so a client that trickles one
/// header byte every few seconds holds a worker indefinitely, and as many such clients as
/// there are workers stop the daemon answering, /healthz included. Here one thread (epoll)
/// collects every connection's request head, with a deadline for the whole head, and hands
/// a connection to a worker only once its head is complete; between kept-alive requests the
/// connection goes back to that thread, not a worker. A worker reads the body and writes the
/// reply under a deadline for each whole. GET /healthz and /readyz have workers of their own,
/// so health probes are answered while every other worker is busy.
class ConnectionServer : public httplib::Server {
 public:
  explicit ConnectionServer(ConnectionLimits limits);
  ~ConnectionServer() override;

  /// Gives the socket bound by bind_to_port() a listen queue of SOMAXCONN (httplib's is 5).
  void widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }

  /// Serves the socket bound by bind_to_port() until halt(). Returns false when the loop
  /// could not start.
  bool serve();
  /// Makes serve() return: stops accepting, closes waiting connections, lets workers finish
  /// the requests they hold. Any thread; idempotent.
  void halt();

  /// Connections closed because their head did not arrive in time (for tests and logs).
  std::size_t slow_heads_closed() const { return slow_heads_closed_.load(); }

 private:
  struct Connection;
  class Loop;
  void run_request(std::unique_ptr<Connection> connection);
  void give_back(std::unique_ptr<Connection> connection);
  void linger_for_next(Connection& connection) const;

  ConnectionLimits limits_;
  std::atomic<bool> halting_{false};
  int wake_fd_ = -1;
  std::mutex returned_mutex_;
  std::deque<std::unique_ptr<Connection>> returned_;  ///< kept-alive connections back from workers
  std::atomic<std::size_t> slow_heads_closed_{0};
};

}  // namespace mlswarm
