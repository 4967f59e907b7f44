#include "mlswarm/http_settings.h"

#include "mlswarm/cli.h"

namespace mlswarm {

HttpSettings::HttpSettings(const HttpServerOptions& d)
    : threads(d.threads),
      io_threads(d.io_threads),
      head_timeout_ms(static_cast<int>(d.head_timeout.count())),
      request_timeout_s(static_cast<int>(d.request_timeout.count() / 1000)),
      queue_wait_ms(static_cast<int>(d.queue_wait.count())),
      max_queued(static_cast<int>(d.max_queued)),
      max_head_bytes(static_cast<int>(d.max_head_bytes)),
      max_connections(static_cast<long>(d.max_connections)),
      max_connections_per_address(static_cast<long>(d.max_connections_per_address)),
      fd_reserve(static_cast<long>(d.fd_reserve)),
      max_buffered_mb(static_cast<int>(d.max_buffered_bytes >> 20)) {}

HttpServerOptions HttpSettings::apply(HttpServerOptions base) const {
  base.threads = threads;
  base.io_threads = io_threads;
  base.head_timeout = std::chrono::milliseconds(head_timeout_ms);
  base.request_timeout = std::chrono::seconds(request_timeout_s);
  base.queue_wait = std::chrono::milliseconds(queue_wait_ms);
  base.max_queued = static_cast<std::size_t>(max_queued);
  base.max_head_bytes = static_cast<std::size_t>(max_head_bytes);
  base.max_connections = static_cast<std::size_t>(max_connections);
  base.max_connections_per_address = static_cast<std::size_t>(max_connections_per_address);
  base.fd_reserve = static_cast<std::size_t>(fd_reserve);
  base.max_buffered_bytes = static_cast<std::size_t>(max_buffered_mb) << 20;
  return base;
}

void add_http_settings(CLI::App& app, HttpSettings& s) {
  using cli::in_range;
  using cli::setting;
  setting(app, "--http-threads", "HTTP_THREADS", s.threads,
          "requests handled at once (a connection holds a worker only from its complete request to its reply)")
      ->check(in_range(1, 1024));
  setting(app, "--http-io-threads", "HTTP_IO_THREADS", s.io_threads,
          "threads that accept, read, parse and write connections (and answer health probes)")
      ->check(in_range(1, 64));
  setting(app, "--http-head-timeout-ms", "HTTP_HEAD_TIMEOUT_MS", s.head_timeout_ms,
          "a request's line and headers (and a TLS handshake) must arrive within this, from connect or from the "
          "previous reply")
      ->check(in_range(100, 600000));
  setting(app, "--request-timeout-s", "REQUEST_TIMEOUT_S", s.request_timeout_s,
          "seconds a client has to send a whole request body, and to read a whole reply")
      ->check(in_range(1, 3600));
  setting(app, "--http-queue-wait-ms", "HTTP_QUEUE_WAIT_MS", s.queue_wait_ms,
          "a complete request that waited this long for a worker is answered 503")
      ->check(in_range(1, 600000));
  setting(app, "--http-max-queued", "HTTP_MAX_QUEUED", s.max_queued,
          "complete requests waiting for a worker; more are answered 503 at once")
      ->check(in_range(1, 1000000));
  setting(app, "--http-max-head-bytes", "HTTP_MAX_HEAD_BYTES", s.max_head_bytes,
          "the largest request line and headers (431 beyond)")
      ->check(in_range(1024, 1 << 20));
  setting(app, "--http-max-connections", "HTTP_MAX_CONNECTIONS", s.max_connections,
          "open connections at most; never more than the file limit minus HTTP_FD_RESERVE (0: that alone)")
      ->check(in_range(0, 10000000));
  setting(app, "--http-max-connections-per-address", "HTTP_MAX_CONNECTIONS_PER_ADDRESS", s.max_connections_per_address,
          "connections one client address may hold; beyond, its oldest idle one is closed (0: half of all)")
      ->check(in_range(0, 10000000));
  setting(app, "--http-fd-reserve", "HTTP_FD_RESERVE", s.fd_reserve,
          "file descriptors kept for the daemon's own files and calls, never used by connections (0: a quarter "
          "of the file limit, 64 to 1024)")
      ->check(in_range(0, 10000000));
  setting(app, "--http-max-buffered-mb", "HTTP_MAX_BUFFERED_MB", s.max_buffered_mb,
          "request bodies held in memory at once, all connections together (503 beyond)")
      ->check(in_range(1, 1 << 20));
}

}  // namespace mlswarm
