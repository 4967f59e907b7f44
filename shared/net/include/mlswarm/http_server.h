#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "mlswarm/http.h"

namespace mlswarm {

/// What a daemon gives the HTTP edge. Both functions may be called from any HTTP thread.
struct HttpService {
  /// Called with the request line and headers only (the body not read yet, `body` empty):
  /// nullopt admits the request; a reply refuses it: the server sends that reply and closes
  /// the connection without reading the body (unauthenticated or oversized uploads cost no
  /// memory). Optional.
  std::function<std::optional<HttpReply>(const HttpRequest&)> admit;
  /// The whole request, body read.
  std::function<HttpReply(const HttpRequest&)> handle;
  /// The /metrics `route` label of a path, from a bounded set ("other" for unknown paths).
  std::function<std::string(const std::string& path)> label;
};

struct HttpServerOptions {
  std::size_t max_body_bytes = 64u << 20;  ///< the largest body of any route
  int threads = 8;
  /// One read or write that makes no progress; and, over plain HTTP, the whole request head
  /// (line and headers), counted from its first byte.
  std::chrono::seconds read_timeout{10};
  std::chrono::seconds write_timeout{10};
  /// Over plain HTTP: the whole body read, and the whole reply written (each counted apart).
  std::chrono::seconds request_timeout{60};
  /// Over plain HTTP: workers that answer only GET /healthz and /readyz, so that probes are
  /// answered while every other worker is busy.
  int probe_threads = 1;
  /// PEM files; both set = HTTPS (OpenSSL) on the port instead of plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
};

/// The request id to use for a request: the client's X-Request-Id when it is a sane
/// token (1-64 of [A-Za-z0-9._:-]), otherwise 16 fresh random hex digits.
std::string request_id_for(const std::string& client_value);

/// The HTTP edge: cpp-httplib behind a pimpl so that only this translation unit includes
/// it. Over plain HTTP, connections are accepted by mlswarm's own loop (ConnectionServer):
/// a worker thread gets a connection only once its request head has arrived, so clients
/// that trickle bytes hold no worker; over TLS, httplib's own loop (timeouts per read).
/// Every method and path goes through the service's admit() and then handle(); errors
/// httplib produces itself (body too large, bad request line) get the JSON error shape too.
/// Every request gets a request id (HttpRequest::request_id, the X-Request-Id reply header,
/// and a LogScope field around the handler) and is counted in /metrics under its route
/// label. Every request is logged at debug. run() blocks; stop() may be called from any
/// thread and makes run() return.
class HttpServer {
 public:
  HttpServer(HttpService service, HttpServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds `host:port` (port 0 picks a free one). Throws Error(kUnavailable) on failure,
  /// Error(kInvalidArgument) when the TLS certificate or key cannot be loaded.
  void bind(const std::string& host, int port);
  int port() const;
  /// Serves until stop(). Returns false if the server failed.
  bool run();
  void stop();

 private:
  void widen_backlog();  ///< a listen queue of SOMAXCONN, from bind() on

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlswarm
