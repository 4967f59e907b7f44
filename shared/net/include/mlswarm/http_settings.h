#pragma once

// The HTTP edge's settings, the same flags and variables on both daemons (CLI11: include only
// from the daemons' config parsers).

#include <cstddef>

#include <CLI/CLI.hpp>

#include "mlswarm/http_server.h"

namespace mlswarm {

/// HttpServerOptions as settings: whole numbers in the units their variables name.
struct HttpSettings {
  explicit HttpSettings(const HttpServerOptions& defaults = {});
  /// These settings over `base` (its TLS files and body cap are left as they are).
  HttpServerOptions apply(HttpServerOptions base) const;

  int threads;
  int io_threads;
  int head_timeout_ms;
  int request_timeout_s;
  int queue_wait_ms;
  int max_queued;
  int max_head_bytes;
  long max_connections;
  long max_connections_per_address;
  long fd_reserve;
  int max_buffered_mb;
};

/// --http-threads (HTTP_THREADS), --http-io-threads, --http-head-timeout-ms,
/// --request-timeout-s (REQUEST_TIMEOUT_S), --http-queue-wait-ms, --http-max-queued,
/// --http-max-head-bytes, --http-max-connections, --http-max-connections-per-address,
/// --http-fd-reserve, --http-max-buffered-mb: each with its HTTP_* variable and range.
void add_http_settings(CLI::App& app, HttpSettings& settings);

}  // namespace mlswarm
