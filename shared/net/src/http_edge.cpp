#include "http_edge.h"

#include <algorithm>

#include <boost/beast/http/status.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/log.h"
#include "mlswarm/metrics.h"
#include "request_framer.h"

namespace mlswarm {
namespace {

/// `text` starts with `prefix` (lower case), ignoring case.
bool starts_with_lower(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), text.begin(), [](char p, char t) {
           return p == std::tolower(static_cast<unsigned char>(t));
         });
}

bool header_safe(const std::string& text) { return text.find_first_of("\r\n") == std::string::npos; }

}  // namespace

HttpEdge::HttpEdge(HttpService service) : service_(std::move(service)) {
  Metrics& m = Metrics::global();
  m.describe("mlswarm_http_requests_total", "counter", "HTTP requests by route, method and status");
  m.describe("mlswarm_http_request_duration_seconds", "histogram",
             "time from a request's complete head to its reply, by route");
  m.describe("mlswarm_http_connections_closed_total", "counter",
             "connections the server closed before the client did, by reason");
  m.describe("mlswarm_http_busy_total", "counter",
             "503s for want of room: a full worker queue, a wait for a worker too long, bodies at their bound");
}

std::optional<HttpReply> HttpEdge::admit(const HttpRequest& head) const {
  if (!service_.admit) return std::nullopt;
  LogScope scope{{"request_id", head.request_id}};
  try {
    return service_.admit(head);
  } catch (...) {
    return reply_for_exception(head, std::current_exception());
  }
}

std::size_t HttpEdge::body_cap(const HttpRequest& head, std::size_t fallback) const {
  if (!service_.body_cap) return fallback;
  return std::min(service_.body_cap(head), fallback);
}

bool HttpEdge::is_probe(const HttpRequest& request) const { return service_.probe && service_.probe(request); }

HttpReply HttpEdge::answer(HttpRequest request, std::chrono::steady_clock::time_point started) const {
  LogScope scope{{"request_id", request.request_id}};
  HttpReply reply;
  const std::string type = request.header("content-type");
  const bool multipart = starts_with_lower(type, "multipart/form-data");
  try {
    if (multipart) {
      request.files = parse_multipart(type, request.body);
      request.body = std::string();
    }
    reply = guarded(service_.handle, request);
  } catch (...) {
    reply = reply_for_exception(request, std::current_exception());
  }
  count(request, reply.status, started);
  spdlog::debug("{} {} {} -> {}", request.remote_addr, request.method, request.path, reply.status);
  return reply;
}

void HttpEdge::count(const HttpRequest& request, int status, std::chrono::steady_clock::time_point started) const {
  const std::string route = service_.label ? service_.label(request.path) : std::string("other");
  Metrics::global().inc("mlswarm_http_requests_total", {{"route", route},
                                                        {"method", request.method.empty() ? "none" : request.method},
                                                        {"status", std::to_string(status)}});
  Metrics::global().observe("mlswarm_http_request_duration_seconds", {{"route", route}},
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

std::string render_reply_head(const HttpReply& reply, const std::string& request_id, bool keep_alive) {
  const auto reason = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(reply.status));
  std::string head = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-Request-Id: {}\r\n",
                                 reply.status, std::string_view(reason.data(), reason.size()),
                                 header_safe(reply.content_type) ? reply.content_type : "application/octet-stream",
                                 reply.body.size(), request_id);
  bool said_connection = false;
  for (const auto& [name, value] : reply.headers) {
    if (!header_safe(name) || !header_safe(value) || name.empty()) continue;
    const bool connection = name.size() == 10 && starts_with_lower(name, "connection");
    if (connection) {
      if (keep_alive) continue;  // the server decides; a handler's "close" has already made keep_alive false
      said_connection = true;
    }
    const bool ours = name == "Content-Type" || name == "Content-Length" || name == "X-Request-Id";
    if (!ours) head += fmt::format("{}: {}\r\n", name, value);
  }
  if (!keep_alive && !said_connection) head += "Connection: close\r\n";
  head += "\r\n";
  return head;
}

}  // namespace mlswarm
