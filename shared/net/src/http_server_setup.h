#pragma once

// Internal to the shared library (and the HTTP fuzz target): how HttpServer configures
// cpp-httplib, so that the fuzz target can feed raw bytes through exactly the same parsing,
// limits, request conversion and error replies without a socket.

#include <httplib.h>

#include "mlswarm/http_server.h"

namespace mlswarm {

/// Routes every method and path of `svr` through `service` (admit before the body is read,
/// then handle) and sets the limits of `options` (body size, timeouts, threads),
/// TCP_NODELAY, request ids, metrics and the JSON error handlers.
void configure_http_server(httplib::Server& svr, HttpService service, const HttpServerOptions& options);

}  // namespace mlswarm
