#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "mlswarm/http.h"

namespace mlswarm {

/// What a daemon gives the HTTP edge.
struct HttpService {
  /// Called on a network thread with the request line and headers only (`body` empty):
  /// nullopt admits the request; a reply refuses it: the server sends that reply and closes
  /// the connection without reading the body (unauthenticated or oversized uploads cost no
  /// memory and no worker). Must be quick and never block. Optional.
  std::function<std::optional<HttpReply>(const HttpRequest&)> admit;
  /// The whole request, body read; on a worker thread (or on a network thread for a probe).
  std::function<HttpReply(const HttpRequest&)> handle;
  /// The /metrics `route` label of a path, from a bounded set ("other" for unknown paths).
  std::function<std::string(const std::string& path)> label;
  /// True for a request that handle() answers at once without blocking (health probes,
  /// discovery's /type): it is answered on the network thread, never queued behind other
  /// work. Optional (no probes).
  std::function<bool(const HttpRequest&)> probe;
  /// The largest body admit() will take for this head, once it admitted it (a route's cap);
  /// a chunked body is cut off there. Optional: max_body_bytes for every route.
  std::function<std::size_t(const HttpRequest&)> body_cap;
};

/// The limits of the HTTP edge. Every connection, every byte held and every wait has a bound;
/// each is a setting of both daemons (add_http_settings), defaults here.
struct HttpServerOptions {
  std::size_t max_body_bytes = 64u << 20;  ///< the largest body of any route
  int threads = 8;                         ///< HTTP_THREADS: requests handled at once
  int io_threads = 1;                      ///< HTTP_IO_THREADS: threads that read, parse and write
  /// HTTP_HEAD_TIMEOUT_MS: a request's line and headers (and a TLS handshake) must have
  /// arrived this long after the connection was made, or after the previous reply was sent.
  std::chrono::milliseconds head_timeout{10'000};
  /// REQUEST_TIMEOUT_S: an admitted request's whole body, and a whole reply, each.
  std::chrono::milliseconds request_timeout{60'000};
  /// HTTP_QUEUE_WAIT_MS: a complete request that waited this long for a worker gets a 503.
  std::chrono::milliseconds queue_wait{10'000};
  std::size_t max_queued = 1024;           ///< HTTP_MAX_QUEUED: complete requests waiting for a worker (more: 503)
  std::size_t max_head_bytes = 16u << 10;  ///< HTTP_MAX_HEAD_BYTES: a request line and its headers (more: 431)
  /// HTTP_MAX_CONNECTIONS: open connections at most (0: derived from the file limit alone).
  /// Always at most the descriptor limit minus fd_reserve.
  std::size_t max_connections = 10'000;
  /// HTTP_MAX_CONNECTIONS_PER_ADDRESS (0: half of the connections): a client address that
  /// holds this many has its own oldest waiting connection closed for a new one.
  std::size_t max_connections_per_address = 0;
  /// HTTP_FD_RESERVE (0: a quarter of the file limit, between 64 and 1024): descriptors kept
  /// for the daemon's own files, outgoing calls and discovery, never used by connections.
  std::size_t fd_reserve = 0;
  /// HTTP_MAX_BUFFERED_MB: request bodies held in memory at once, all connections together
  /// (a body that does not fit gets a 503 before it is read).
  std::size_t max_buffered_bytes = 512u << 20;
  /// PEM files; both set = HTTPS (OpenSSL) on the port instead of plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
};

/// The limits an HttpServer settled on at bind(), from its options and the process's file limit.
struct HttpLimits {
  std::size_t file_limit = 0;  ///< RLIMIT_NOFILE (soft, after raising it to the hard limit)
  std::size_t fd_reserve = 0;
  std::size_t max_connections = 0;
  std::size_t max_connections_per_address = 0;
};

/// The limits of `options` under a file limit of `file_limit` descriptors: the reserve (the
/// option, else a quarter of the limit between 64 and 1024, never all of it), connections at
/// most the limit minus the reserve (and the option), per address half of them unless set.
HttpLimits settle_http_limits(const HttpServerOptions& options, std::size_t file_limit);

/// The request id to use for a request: the client's X-Request-Id when it is a sane
/// token (1-64 of [A-Za-z0-9._:-]), otherwise 16 fresh random hex digits.
std::string request_id_for(const std::string& client_value);

/// The HTTP edge of both daemons: HTTP/1.1 on Boost.Beast's parser and Boost.Asio, plain or
/// TLS (one code path: a TLS connection is the same session over an SSL stream).
///
/// A connection has one deadline for its head (from connect, TLS handshake included, or from
/// the previous reply), then one for its body and one for its reply. Network threads read,
/// parse and write; they run admit() on every head and answer probes; a worker thread gets a
/// request only once it is complete and admitted, so clients that trickle bytes hold no worker.
/// One request at a time per connection, in order; a half-closed client still gets its answer.
/// Framing is strict: a duplicate Content-Length, Content-Length with Transfer-Encoding, and any
/// transfer coding but chunked get a 400 and the connection closes. Connections are bounded
/// (by the file limit minus a reserve, and per client address: the oldest connection waiting
/// for a head is closed to make room), so are bytes held and the wait for a worker (503).
/// Every request gets a request id (HttpRequest::request_id, the X-Request-Id reply header,
/// and a LogScope field around the handler) and is counted in /metrics under its route label.
/// Thread-safe: run() blocks; stop() may be called from any thread and makes run() return.
class HttpServer {
 public:
  HttpServer(HttpService service, HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds `host:port` (port 0 picks a free one) with a listen queue of SOMAXCONN, and settles
  /// the limits (logged once). Throws Error(kUnavailable) on failure, Error(kInvalidArgument)
  /// when the TLS certificate or key cannot be loaded.
  void bind(const std::string& host, int port);
  int port() const;
  const HttpLimits& limits() const;
  /// Serves until stop(); then closes every connection and joins every thread. Returns false
  /// if the server failed.
  bool run();
  void stop();

  struct Impl;  ///< the server's state, which its connections (in the .cpp) share

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlswarm
