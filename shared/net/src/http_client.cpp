#include "mlswarm/http_client.h"

#include <cstdio>

#include <fmt/format.h>
#include <httplib.h>

namespace mlswarm {

int http_probe(const std::string& host, int port, const std::string& path, std::chrono::milliseconds timeout,
               bool tls) {
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

int healthz_exit_code(int port, bool tls) {
  return http_probe("127.0.0.1", port, "/healthz", std::chrono::milliseconds(2000), tls) == 200 ? 0 : 1;
}

std::optional<int> run_one_shot(const OneShotCommand& command) {
  if (!command.fetch_url.empty()) return fetch_and_print(command.fetch_url, command.bearer);
  if (command.healthcheck) return healthz_exit_code(command.port, command.tls);
  return std::nullopt;
}

}  // namespace mlswarm
