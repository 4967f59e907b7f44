#pragma once

// Internal to the shared library (and the HTTP fuzz target): what HttpServer does with a
// request once the framer has it, without a socket: admission, the handler, metrics, logs and
// the bytes of the reply's head.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include "mlswarm/http_server.h"

namespace mlswarm {

/// One daemon's service behind the steps every request goes through. Holds nothing that
/// changes: thread-safe as far as the service's functions are.
class HttpEdge {
 public:
  explicit HttpEdge(HttpService service);

  /// The service's verdict on a head (request id set); what admit() throws becomes the
  /// refusal. A refusal is counted in /metrics.
  std::optional<HttpReply> admit(const HttpRequest& head) const;
  /// The body cap of an admitted head: the service's, else `fallback`, never above it.
  std::size_t body_cap(const HttpRequest& head, std::size_t fallback) const;
  bool is_probe(const HttpRequest& request) const;
  /// A complete, admitted request: a multipart body split into its files, then the handler
  /// (anything it throws becomes a JSON error), counted and logged at debug.
  HttpReply answer(HttpRequest request, std::chrono::steady_clock::time_point started) const;
  /// Counts a reply in mlswarm_http_requests_total and its duration.
  void count(const HttpRequest& request, int status, std::chrono::steady_clock::time_point started) const;

 private:
  HttpService service_;
};

/// The status line and headers of `reply` (Content-Type, Content-Length, X-Request-Id, its own
/// headers, Connection: close when `keep_alive` is false), ending in the empty line. A header
/// name or value with a line break is left out.
std::string render_reply_head(const HttpReply& reply, const std::string& request_id, bool keep_alive);

}  // namespace mlswarm
