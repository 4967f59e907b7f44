#include "mlswarm/http_server.h"

#include <chrono>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <random>

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "http_server_setup.h"
#include "mlswarm/log.h"
#include "mlswarm/metrics.h"

namespace mlswarm {

struct HttpServer::Impl {
  std::unique_ptr<httplib::Server> server;
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

void configure_http_server(httplib::Server& svr, HttpServer::Handler handler, const HttpServerOptions& options) {
  const int threads = std::max(1, options.threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_payload_max_length(options.max_body_bytes);
  svr.set_read_timeout(options.read_timeout);
  svr.set_write_timeout(options.write_timeout);
  svr.set_keep_alive_max_count(1000);
  // Replies go out as headers then body; without this, Nagle and delayed ACKs add 40 ms.
  svr.set_tcp_nodelay(true);

  auto dispatch = [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    HttpRequest request;
    request.method = req.method;
    request.path = req.path;
    request.body = req.body;
    request.remote_addr = req.remote_addr;
    for (const auto& [k, v] : req.params) request.query.emplace(k, v);
    for (const auto& [k, v] : req.headers) request.headers.emplace(lower(k), v);
    for (const auto& [k, f] : req.files) request.files.push_back({f.name, f.filename, f.content_type, f.content});
    request.request_id = request_id_for(request.header("x-request-id"));
    LogScope scope{{"request_id", request.request_id}};
    const auto started = std::chrono::steady_clock::now();
    HttpReply reply = guarded(handler, request);
    reply.headers["X-Request-Id"] = request.request_id;
    const std::string route = route_label(request.path);
    Metrics::global().inc("mlswarm_http_requests_total",
                          {{"route", route}, {"method", req.method}, {"status", std::to_string(reply.status)}});
    Metrics::global().observe("mlswarm_http_request_duration_seconds", {{"route", route}},
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    res.status = reply.status;
    for (const auto& [k, v] : reply.headers) res.set_header(k, v);
    res.set_content(std::move(reply.body), reply.content_type.c_str());
    spdlog::debug("{} {} {} -> {}", req.remote_addr, req.method, req.path, res.status);
  };
  const char* kAll = R"(/.*)";
  svr.Get(kAll, dispatch);
  svr.Post(kAll, dispatch);
  svr.Put(kAll, dispatch);
  svr.Delete(kAll, dispatch);
  svr.Patch(kAll, dispatch);
  svr.Options(kAll, dispatch);

  // httplib answers some requests itself (413, 400, 404 for unknown methods); give those
  // the JSON error shape too. Handlers always set a body, so an empty one is httplib's.
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    ErrorCode code = res.status == 413 ? ErrorCode::kPayloadTooLarge
                     : res.status == 404 ? ErrorCode::kNotFound
                     : res.status == 405 ? ErrorCode::kMethodNotAllowed
                     : res.status >= 500 ? ErrorCode::kInternal
                                         : ErrorCode::kInvalidArgument;
    std::string message = res.status == 413 ? "request body too large" : "bad request";
    res.set_content(error_json(Error(code, message)).dump() + "\n", "application/json");
  });
  svr.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    HttpRequest request;
    request.method = req.method;
    request.path = req.path;
    HttpReply reply = reply_for_exception(request, ep);
    res.status = reply.status;
    res.set_content(reply.body, "application/json");
  });
}

HttpServer::HttpServer(Handler handler, HttpServerOptions options) : impl_(std::make_unique<Impl>()) {
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
    impl_->server = std::make_unique<httplib::Server>();
  }
  configure_http_server(*impl_->server, std::move(handler), options);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::bind(const std::string& host, int port) {
  if (port == 0) {
    impl_->port = impl_->server->bind_to_any_port(host);
    if (impl_->port <= 0) throw Error(ErrorCode::kUnavailable, fmt::format("cannot bind {}:0", host));
    return;
  }
  if (!impl_->server->bind_to_port(host, port)) {
    throw Error(ErrorCode::kUnavailable,
                fmt::format("cannot listen on {}:{} (address in use or not available)", host, port));
  }
  impl_->port = port;
}

int HttpServer::port() const { return impl_->port; }

bool HttpServer::run() { return impl_->server->listen_after_bind(); }

void HttpServer::stop() { impl_->server->stop(); }

int http_probe(const std::string& host, int port, const std::string& path,
               std::chrono::milliseconds timeout, bool tls) {
  httplib::Client client(fmt::format("{}://{}:{}", tls ? "https" : "http", host, port));
  client.enable_server_certificate_verification(false);
  client.set_connection_timeout(timeout);
  client.set_read_timeout(timeout);
  client.set_write_timeout(timeout);
  auto res = client.Get(path.c_str());
  return res ? res->status : -1;
}

int fetch_and_print(const std::string& url, const std::string& bearer) {
  std::string scheme;
  for (const char* s : {"http://", "https://"}) {
    if (url.rfind(s, 0) == 0) scheme = s;
  }
  if (scheme.empty()) {
    std::fprintf(stderr, "--fetch takes http://HOST:PORT/PATH or https://HOST:PORT/PATH\n");
    return 1;
  }
  std::string rest = url.substr(scheme.size());
  std::size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  httplib::Client client(scheme + authority);
  client.enable_server_certificate_verification(false);
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::seconds(30));
  httplib::Headers headers;
  if (!bearer.empty()) headers.emplace("Authorization", "Bearer " + bearer);
  auto res = client.Get(path.c_str(), headers);
  if (!res) {
    std::fprintf(stderr, "%s: %s\n", url.c_str(), httplib::to_string(res.error()).c_str());
    return 1;
  }
  std::fwrite(res->body.data(), 1, res->body.size(), stdout);
  return res->status >= 200 && res->status < 300 ? 0 : 1;
}

}  // namespace mlswarm
