#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mlswarm/http.h"
#include "mlswarm/http_server.h"

namespace mlswarm {

/// Who may call a route.
enum class Access {
  kOpen,   ///< anyone (probes: /type, /healthz, /readyz)
  kRead,   ///< read-only: on the controller needs the API token unless PUBLIC_READS
  kWrite,  ///< changes state or costs compute: needs the API token (controller) or a signed call (trainer)
};

/// The values of a pattern's {placeholders}, in order.
using RouteParams = std::vector<std::string>;
using RouteHandler = std::function<HttpReply(const HttpRequest&, const RouteParams&)>;

struct Route {
  std::string method;   ///< "GET" (also answers HEAD), "POST", "DELETE", ...
  std::string pattern;  ///< "/jobs/{id}": literal segments and {name} for any one segment
  Access access = Access::kOpen;
  std::size_t max_body = 0;  ///< the largest body the route takes, checked before it is read
  RouteHandler handler;
  /// Answered on the network thread, never queued behind other work (health probes,
  /// discovery's /type): the handler must be quick and never block.
  bool probe = false;
};

/// A daemon's routes: which handler answers a request, who may call it, how large its body
/// may be, and the bounded label /metrics uses for it. Built once at start, then read-only
/// (thread-safe for lookups).
class RouteTable {
 public:
  RouteTable& add(Route route);

  struct Match {
    const Route* route = nullptr;  ///< null: no route for this method and path
    RouteParams params;
    /// The methods the path has when `route` is null but the path is known ("GET, DELETE"):
    /// a 405 with this Allow header. Empty: no such path (404).
    std::string allow;
  };
  Match match(std::string_view method, std::string_view path) const;

  /// The pattern of the route shape `path` matches ("/jobs/{id}"), or "other": a label with
  /// as many values as there are routes, whatever paths clients try.
  std::string label(std::string_view path) const;

  /// 405 (with Allow) or 404 for a request without a route, as an Error reply.
  static HttpReply no_route(const HttpRequest& request, const Match& match);

  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
  std::vector<std::vector<std::string>> shapes_;  ///< each pattern's segments, by route
};

/// The body size a request announces (Content-Length), or nullopt when it sends none or
/// sends it chunked.
std::optional<std::size_t> announced_body_size(const HttpRequest& head);

/// Throws Error(kPayloadTooLarge) when the request announces, or has read, a body larger
/// than `max_bytes`.
void require_body_within(const HttpRequest& request, std::size_t max_bytes);

/// A daemon's HTTP API over one RouteTable. A subclass adds its routes and says who may call
/// them; the rest is common: admit() on the request line and headers (the route, who may
/// call it, its body cap) before the body is read, serve() after (a chunked body's cap, a
/// subclass's check of the body, then the route's handler). Errors become JSON replies.
/// Thread-safe as far as the subclass's checks and handlers are.
class RoutedApi {
 public:
  virtual ~RoutedApi() = default;

  /// nullopt admits the request; otherwise the refusal (404/405, 401/403, 413).
  std::optional<HttpReply> admit(const HttpRequest& head);
  /// An admitted request.
  HttpReply serve(const HttpRequest& request);
  /// admit() then serve(): the whole path, for tests and tools that call the API directly.
  HttpReply handle(const HttpRequest& request);
  /// The functions HttpServer needs, bound to this API.
  HttpService service();

  const RouteTable& routes() const { return routes_; }

 protected:
  /// Throws Error(kUnauthorized or kForbidden) when `head` may not call `route` (null: the
  /// request has no route).
  virtual void check_access(const HttpRequest& head, const Route* route) = 0;
  /// After the body is read, before the handler. Throws to refuse. Default: nothing.
  virtual void check_body(const HttpRequest& request, const Route& route);
  /// Every refusal and every error reply passes here last: a subclass may give some paths
  /// another error shape (a protocol's own). Default: unchanged.
  virtual HttpReply finish_error(const HttpRequest& request, HttpReply reply);

  RouteTable routes_;
};

/// Runs an admission check; what it throws becomes the refusal reply.
template <typename Check>
std::optional<HttpReply> guarded_admit(const HttpRequest& head, Check&& check) {
  try {
    return check();
  } catch (...) {
    return reply_for_exception(head, std::current_exception());
  }
}

}  // namespace mlswarm
