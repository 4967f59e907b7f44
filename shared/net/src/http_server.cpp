#include "mlswarm/http_server.h"

#include <chrono>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <random>

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "http_connections.h"
#include "http_server_setup.h"
#include "mlswarm/log.h"
#include "mlswarm/metrics.h"

namespace mlswarm {

struct HttpServer::Impl {
  std::unique_ptr<httplib::Server> server;
  ConnectionServer* plain = nullptr;  ///< `server`, when it is plain HTTP
  int port = 0;
};

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

std::string request_id_for(const std::string& client_value) {
  bool sane = !client_value.empty() && client_value.size() <= 64;
  for (unsigned char c : client_value) {
    sane = sane && (std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-');
  }
  if (sane) return client_value;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

namespace {

/// The request line and headers of `req` as handlers see them (no body, no files).
HttpRequest request_head(const httplib::Request& req) {
  HttpRequest request;
  request.method = req.method;
  request.path = req.path;
  request.target = req.target;
  request.remote_addr = req.remote_addr;
  if (!req.local_addr.empty() && req.local_port > 0)
    request.local_addr = req.local_addr + ":" + std::to_string(req.local_port);
  for (const auto& [k, v] : req.params) request.query.emplace(k, v);
  for (const auto& [k, v] : req.headers) request.headers.emplace(lower(k), v);
  request.request_id = request_id_for(request.header("x-request-id"));
  return request;
}

bool has_unread_body(const httplib::Request& req) {
  const std::string length = req.get_header_value("Content-Length");
  return req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos ||
         (!length.empty() && length.find_first_not_of('0') != std::string::npos);
}

/// httplib calls the 100-continue handler (which admits) for these, then routes them.
bool admitted_at_continue(const httplib::Request& req) { return req.get_header_value("Expect") == "100-continue"; }

/// The methods httplib reads a body for (its expect_content()).
bool expects_body(const httplib::Request& req) {
  return req.method == "POST" || req.method == "PUT" || req.method == "PATCH" || req.method == "DELETE";
}

/// The service's verdict on a request's head; what admit() throws becomes the refusal.
std::optional<HttpReply> admit(const HttpService& service, const HttpRequest& head) {
  if (!service.admit) return std::nullopt;
  try {
    return service.admit(head);
  } catch (...) {
    return reply_for_exception(head, std::current_exception());
  }
}

/// Up to this much of a refused request's body is read and thrown away, so that the
/// connection stays usable and a client that sends its whole body before reading hears the
/// refusal; beyond it the connection is closed instead.
constexpr std::size_t kDrainLimit = 8u << 20;

/// Reads and discards the body of a refused request; false when it is larger than
/// kDrainLimit (or broken), and the connection must be closed.
bool drain(const httplib::Request& req, const httplib::ContentReader& reader) {
  const std::string length = req.get_header_value("Content-Length");
  if (!length.empty()) {
    if (length.size() > 12 || length.find_first_not_of("0123456789") != std::string::npos) return false;
    if (std::stoull(length) > kDrainLimit) return false;
  }
  std::size_t read = 0;
  auto discard = [&](const char*, std::size_t n) { return (read += n) <= kDrainLimit; };
  if (req.is_multipart_form_data()) {
    return reader([](const httplib::MultipartFormData&) { return true; }, discard);
  }
  return reader(discard);
}

void count(const HttpService& service, const HttpRequest& request, int status,
           std::chrono::steady_clock::time_point started) {
  const std::string route = service.label ? service.label(request.path) : std::string("other");
  Metrics::global().inc("mlswarm_http_requests_total",
                        {{"route", route}, {"method", request.method}, {"status", std::to_string(status)}});
  Metrics::global().observe("mlswarm_http_request_duration_seconds", {{"route", route}},
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

void write_reply(httplib::Response& res, HttpReply reply, const std::string& request_id) {
  res.status = reply.status;
  reply.headers["X-Request-Id"] = request_id;
  for (const auto& [k, v] : reply.headers) res.set_header(k, v);
  res.set_content(std::move(reply.body), reply.content_type.c_str());
}

/// Sends `reply` and then closes the connection, so that the body the client is still
/// sending is never read: httplib would otherwise parse it as the next request. A content
/// provider that writes the whole reply and then reports failure is how httplib 0.11 lets
/// a handler end a kept-alive connection.
void write_reply_and_close(httplib::Response& res, HttpReply reply, const std::string& request_id) {
  res.status = reply.status;
  reply.headers["X-Request-Id"] = request_id;
  reply.headers["Connection"] = "close";
  for (const auto& [k, v] : reply.headers) res.set_header(k, v);
  auto body = std::make_shared<std::string>(std::move(reply.body));
  res.set_content_provider(body->size(), reply.content_type.c_str(),
                           [body](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                             sink.write(body->data() + offset, length);
                             return false;
                           });
}

/// A refusal of a request httplib reads no body for: the connection closes if one comes anyway.
void write_refusal(const httplib::Request& req, httplib::Response& res, HttpReply reply,
                   const std::string& request_id) {
  if (has_unread_body(req)) {
    write_reply_and_close(res, std::move(reply), request_id);
  } else {
    write_reply(res, std::move(reply), request_id);
  }
}

/// The stages every request goes through, for one daemon's service. Shared by httplib's
/// worker threads; holds nothing that changes.
class Edge {
 public:
  Edge(HttpService service, std::size_t max_body) : service_(std::move(service)), max_body_(max_body) {}

  /// Before routing: requests without a body (GET, HEAD, OPTIONS) are admitted here.
  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) const {
    if (expects_body(req)) return httplib::Server::HandlerResponse::Unhandled;  // admitted with its body
    const auto started = std::chrono::steady_clock::now();
    HttpRequest head = request_head(req);
    LogScope scope{{"request_id", head.request_id}};
    auto refused = admit(service_, head);
    if (!refused) return httplib::Server::HandlerResponse::Unhandled;
    count(service_, head, refused->status, started);
    write_refusal(req, res, std::move(*refused), head.request_id);
    return httplib::Server::HandlerResponse::Handled;
  }

  /// A client that asks first (Expect: 100-continue, as curl does for large uploads) hears
  /// the refusal instead of "100 Continue" and never sends the body.
  int ask_first(const httplib::Request& req, httplib::Response& res) const {
    HttpRequest head = request_head(req);
    LogScope scope{{"request_id", head.request_id}};
    auto refused = admit(service_, head);
    if (!refused) return 100;
    count(service_, head, refused->status, std::chrono::steady_clock::now());
    const int status = refused->status;
    write_refusal(req, res, std::move(*refused), head.request_id);
    return status;
  }

  void without_body(const httplib::Request& req, httplib::Response& res) const {
    answer(req, res, request_head(req), std::chrono::steady_clock::now());
  }

  /// Methods with a body: admitted on the request line and headers first; the body is read
  /// only for an admitted request, and never past the largest body of any route.
  void with_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) const {
    const auto started = std::chrono::steady_clock::now();
    HttpRequest request = request_head(req);
    {
      LogScope scope{{"request_id", request.request_id}};
      // A request that asked first was admitted then (and a signed one must not be checked twice).
      auto refused = admitted_at_continue(req) ? std::nullopt : admit(service_, request);
      if (refused) {
        count(service_, request, refused->status, started);
        spdlog::debug("{} {} {} -> {} before the body", req.remote_addr, req.method, req.path, refused->status);
        if (drain(req, reader)) {
          write_reply(res, std::move(*refused), request.request_id);
        } else {
          write_reply_and_close(res, std::move(*refused), request.request_id);
        }
        return;
      }
    }
    if (auto failed = read_body(req, reader, request)) {
      count(service_, request, failed->status, started);
      write_reply_and_close(res, std::move(*failed), request.request_id);
      return;
    }
    answer(req, res, std::move(request), started);
  }

 private:
  /// Reads the body (or the multipart parts) into `request`; an error reply when it is larger
  /// than any route takes, malformed or cut short.
  std::optional<HttpReply> read_body(const httplib::Request& req, const httplib::ContentReader& reader,
                                     HttpRequest& request) const {
    std::size_t read = 0;
    bool too_large = false;
    auto take = [&](std::string& into, const char* data, std::size_t n) {
      read += n;
      if (read > max_body_) {
        too_large = true;
        return false;
      }
      into.append(data, n);
      return true;
    };
    bool complete = false;
    if (req.is_multipart_form_data()) {
      complete = reader(
          [&](const httplib::MultipartFormData& part) {
            request.files.push_back({part.name, part.filename, part.content_type, {}});
            return true;
          },
          [&](const char* data, std::size_t n) {
            return !request.files.empty() && take(request.files.back().content, data, n);
          });
    } else {
      complete = reader([&](const char* data, std::size_t n) { return take(request.body, data, n); });
    }
    if (complete) return std::nullopt;
    return HttpReply::error(too_large
                                ? Error(ErrorCode::kPayloadTooLarge, "request body too large")
                                : Error(ErrorCode::kInvalidArgument, "the request body is malformed or cut short"));
  }

  void answer(const httplib::Request& req, httplib::Response& res, HttpRequest request,
              std::chrono::steady_clock::time_point started) const {
    LogScope scope{{"request_id", request.request_id}};
    HttpReply reply = guarded(service_.handle, request);
    count(service_, request, reply.status, started);
    spdlog::debug("{} {} {} -> {}", req.remote_addr, req.method, req.path, reply.status);
    write_reply(res, std::move(reply), request.request_id);
  }

  HttpService service_;
  std::size_t max_body_;
};

/// httplib answers some requests itself (413, 400, 404 for unknown methods); those get the
/// JSON error shape too. Handlers always set a body (or a content provider, for a reply that
/// closes the connection), so a reply with neither is httplib's.
void json_error_body(const httplib::Request&, httplib::Response& res) {
  if (!res.body.empty() || res.content_length_ > 0) return;
  ErrorCode code = res.status == 413   ? ErrorCode::kPayloadTooLarge
                   : res.status == 404 ? ErrorCode::kNotFound
                   : res.status == 405 ? ErrorCode::kMethodNotAllowed
                   : res.status >= 500 ? ErrorCode::kInternal
                                       : ErrorCode::kInvalidArgument;
  std::string message = res.status == 413 ? "request body too large" : "bad request";
  res.set_content(error_json(Error(code, message)).dump() + "\n", "application/json");
}

/// httplib (the Debian build) listens with a backlog of 5 connections. When a burst of clients
/// connects at once (64 in bench/predict.sh, a load balancer's pool after a restart) the
/// accept queue overflows: SYNs are dropped and retried a second later, and some connections
/// fail outright. httplib keeps its socket private, and listen() again on a listening socket
/// only resizes its queue, so give every listening socket of this process on `port` (this
/// server's; another server could share the port only on another address, and a larger queue
/// does it no harm) a queue of SOMAXCONN.
void widen_listen_backlog(int port) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return;
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == ::dirfd(dir)) continue;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0)
      continue;
    sockaddr_storage addr{};
    socklen_t addr_len = sizeof addr;
    if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0) continue;
    const int bound_port = addr.ss_family == AF_INET    ? ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port)
                           : addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port)
                                                        : -1;
    if (bound_port == port) ::listen(static_cast<int>(fd), SOMAXCONN);
  }
  ::closedir(dir);
}

}  // namespace

void configure_http_server(httplib::Server& svr, HttpService service, const HttpServerOptions& options) {
  const int threads = std::max(1, options.threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_payload_max_length(options.max_body_bytes);
  svr.set_read_timeout(options.read_timeout);
  svr.set_write_timeout(options.write_timeout);
  svr.set_keep_alive_max_count(1000);
  // Replies go out as headers then body; without this, Nagle and delayed ACKs add 40 ms.
  svr.set_tcp_nodelay(true);
  auto edge = std::make_shared<const Edge>(std::move(service), options.max_body_bytes);
  svr.set_pre_routing_handler(
      [edge](const httplib::Request& req, httplib::Response& res) { return edge->pre_route(req, res); });
  svr.set_expect_100_continue_handler(
      [edge](const httplib::Request& req, httplib::Response& res) { return edge->ask_first(req, res); });
  auto without_body = [edge](const httplib::Request& req, httplib::Response& res) { edge->without_body(req, res); };
  auto with_body = [edge](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    edge->with_body(req, res, reader);
  };
  const char* kAll = R"(/.*)";
  svr.Get(kAll, without_body);
  svr.Options(kAll, without_body);
  svr.Post(kAll, with_body);
  svr.Put(kAll, with_body);
  svr.Delete(kAll, with_body);
  svr.Patch(kAll, with_body);
  svr.set_error_handler(json_error_body);
  svr.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    HttpRequest request;
    request.method = req.method;
    request.path = req.path;
    HttpReply reply = reply_for_exception(request, ep);
    res.status = reply.status;
    res.set_content(reply.body, "application/json");
  });
}

HttpServer::HttpServer(HttpService service, HttpServerOptions options) : impl_(std::make_unique<Impl>()) {
  Metrics::global().describe("mlswarm_http_requests_total", "counter", "HTTP requests by route, method and status");
  Metrics::global().describe("mlswarm_http_request_duration_seconds", "histogram",
                             "time from a parsed request to its reply, by route");
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "TLS needs both a certificate file and a key file", "TLS_CERT_FILE");
    }
    auto tls = std::make_unique<httplib::SSLServer>(options.tls_cert_file.c_str(), options.tls_key_file.c_str());
    if (!tls->is_valid()) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("cannot load the TLS certificate {} or key {} (PEM expected, key unencrypted)",
                              options.tls_cert_file, options.tls_key_file),
                  "TLS_CERT_FILE");
    }
    impl_->server = std::move(tls);
  } else {
    ConnectionLimits limits;
    limits.threads = std::max(1, options.threads);
    limits.probe_threads = std::max(1, options.probe_threads);
    limits.head_timeout = options.read_timeout;
    limits.io_timeout = std::max(options.read_timeout, options.write_timeout);
    limits.request_timeout = options.request_timeout;
    auto plain = std::make_unique<ConnectionServer>(limits);
    impl_->plain = plain.get();
    impl_->server = std::move(plain);
  }
  configure_http_server(*impl_->server, std::move(service), options);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::bind(const std::string& host, int port) {
  if (port == 0) {
    impl_->port = impl_->server->bind_to_any_port(host);
    if (impl_->port <= 0) throw Error(ErrorCode::kUnavailable, fmt::format("cannot bind {}:0", host));
    widen_backlog();
    return;
  }
  if (!impl_->server->bind_to_port(host, port)) {
    throw Error(ErrorCode::kUnavailable,
                fmt::format("cannot listen on {}:{} (address in use or not available)", host, port));
  }
  impl_->port = port;
  widen_backlog();
}

void HttpServer::widen_backlog() {
  if (impl_->plain) {
    impl_->plain->widen_backlog();  // its own socket
  } else {
    widen_listen_backlog(impl_->port);  // httplib's, found among the process's sockets
  }
}

int HttpServer::port() const { return impl_->port; }

bool HttpServer::run() { return impl_->plain ? impl_->plain->serve() : impl_->server->listen_after_bind(); }

void HttpServer::stop() {
  if (impl_->plain) {
    impl_->plain->halt();
  } else {
    impl_->server->stop();
  }
}

}  // namespace mlswarm
