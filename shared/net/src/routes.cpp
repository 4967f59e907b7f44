#include "mlswarm/routes.h"

#include <algorithm>

#include <fmt/format.h>

namespace mlswarm {
namespace {

bool same_method(std::string_view route_method, std::string_view method) {
  return route_method == method || (route_method == "GET" && method == "HEAD");
}

/// Matches a path's segments against a pattern's; fills `params` with the placeholder values.
bool matches(const std::vector<std::string>& shape, const std::vector<std::string>& parts, RouteParams* params) {
  if (shape.size() != parts.size()) return false;
  RouteParams values;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i].size() > 1 && shape[i].front() == '{' && shape[i].back() == '}') {
      values.push_back(parts[i]);
    } else if (shape[i] != parts[i]) {
      return false;
    }
  }
  if (params != nullptr) *params = std::move(values);
  return true;
}

}  // namespace

RouteTable& RouteTable::add(Route route) {
  shapes_.push_back(split_path(route.pattern));
  routes_.push_back(std::move(route));
  return *this;
}

RouteTable::Match RouteTable::match(std::string_view method, std::string_view path) const {
  Match m;
  const auto parts = split_path(path);
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    const Route& r = routes_[i];
    RouteParams params;
    if (!matches(shapes_[i], parts, &params)) continue;
    if (same_method(r.method, method)) {
      m.route = &r;
      m.params = std::move(params);
      m.allow.clear();
      return m;
    }
    if (m.allow.find(r.method) == std::string::npos) m.allow += (m.allow.empty() ? "" : ", ") + r.method;
  }
  return m;
}

std::string RouteTable::label(std::string_view path) const {
  const auto parts = split_path(path);
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    if (matches(shapes_[i], parts, nullptr)) return routes_[i].pattern;
  }
  return "other";
}

HttpReply RouteTable::no_route(const HttpRequest& request, const Match& match) {
  if (match.allow.empty()) {
    return HttpReply::error(Error(ErrorCode::kNotFound, fmt::format("no route {} {}", request.method, request.path)));
  }
  HttpReply reply =
      HttpReply::error(Error(ErrorCode::kMethodNotAllowed,
                             fmt::format("{} {} is not supported; use {}", request.method, request.path, match.allow)));
  reply.headers["Allow"] = match.allow;
  return reply;
}

std::optional<std::size_t> announced_body_size(const HttpRequest& head) {
  const std::string length = head.header("content-length");
  if (length.empty()) return std::nullopt;
  std::size_t value = 0;
  for (char c : length) {
    if (c < '0' || c > '9' || value > (std::size_t{1} << 50)) return std::size_t{1} << 50;  // absurd: too large
    value = value * 10 + static_cast<std::size_t>(c - '0');
  }
  return value;
}

std::optional<HttpReply> RoutedApi::admit(const HttpRequest& head) {
  auto refused = guarded_admit(head, [&]() -> std::optional<HttpReply> {
    const RouteTable::Match match = routes_.match(head.method, head.path);
    check_access(head, match.route);
    if (match.route == nullptr) return RouteTable::no_route(head, match);
    require_body_within(head, match.route->max_body);
    return std::nullopt;
  });
  if (refused) return finish_error(head, std::move(*refused));
  return std::nullopt;
}

HttpReply RoutedApi::serve(const HttpRequest& request) {
  HttpReply reply = guarded(
      [this](const HttpRequest& r) {
        const RouteTable::Match match = routes_.match(r.method, r.path);
        if (match.route == nullptr) return RouteTable::no_route(r, match);
        // A chunked body announced no length: its cap is checked now that it is read.
        require_body_within(r, match.route->max_body);
        check_body(r, *match.route);
        return match.route->handler(r, match.params);
      },
      request);
  return reply.status >= 400 ? finish_error(request, std::move(reply)) : reply;
}

HttpReply RoutedApi::handle(const HttpRequest& request) {
  if (auto refused = admit(request)) return *refused;
  return serve(request);
}

HttpService RoutedApi::service() {
  HttpService service;
  service.admit = [this](const HttpRequest& head) { return admit(head); };
  service.handle = [this](const HttpRequest& request) { return serve(request); };
  service.label = [this](const std::string& path) { return routes_.label(path); };
  service.probe = [this](const HttpRequest& request) {
    const RouteTable::Match match = routes_.match(request.method, request.path);
    return match.route != nullptr && match.route->probe;
  };
  service.body_cap = [this](const HttpRequest& head) {
    const RouteTable::Match match = routes_.match(head.method, head.path);
    return match.route != nullptr ? match.route->max_body : std::size_t{0};
  };
  return service;
}

void RoutedApi::check_body(const HttpRequest&, const Route&) {}

HttpReply RoutedApi::finish_error(const HttpRequest&, HttpReply reply) { return reply; }

void require_body_within(const HttpRequest& request, std::size_t max_bytes) {
  const std::size_t size = std::max(announced_body_size(request).value_or(0), request.body.size());
  if (size > max_bytes) {
    throw Error(ErrorCode::kPayloadTooLarge, max_bytes == 0
                                                 ? fmt::format("{} {} takes no body", request.method, request.path)
                                                 : fmt::format("the body of {} {} may be at most {} bytes",
                                                               request.method, request.path, max_bytes));
  }
}

}  // namespace mlswarm
