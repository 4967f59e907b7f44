#include "client.h"

#include <chrono>

#include <fmt/format.h>
#include <httplib.h>

namespace mlswarm::cli_tool {

using nlohmann::json;

namespace {

httplib::Headers headers_for(const std::string& token) {
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  return headers;
}

std::unique_ptr<httplib::Client> connect(const std::string& url) {
  auto client = std::make_unique<httplib::Client>(url);
  client->enable_server_certificate_verification(false);  // self-signed TLS_CERT_FILE is the common case
  client->set_connection_timeout(std::chrono::seconds(5));
  client->set_read_timeout(std::chrono::seconds(60));
  return client;
}

Reply finish(const std::string& url, const httplib::Result& res) {
  if (!res) {
    const bool refused = res.error() == httplib::Error::Connection;
    throw CliError(fmt::format("cannot reach the controller at {}: {} (set MLSWARM_URL or --url)", url,
                               refused ? "connection refused or host unreachable" : httplib::to_string(res.error())),
                   kExitUnreachable);
  }
  Reply reply;
  reply.status = res->status;
  reply.text = res->body;
  reply.body = json::parse(res->body, nullptr, false);
  if (reply.status == 401 || reply.status == 403) {
    throw CliError(error_text(reply.status, reply.body) +
                       (reply.status == 401 ? " (set MLSWARM_TOKEN_FILE or --token-file)" : " (wrong token)"),
                   kExitUnauthorized);
  }
  if (reply.status < 200 || reply.status >= 300) throw CliError(error_text(reply.status, reply.body), kExitFailed);
  if (reply.body.is_discarded()) throw CliError("the controller's reply is not JSON", kExitFailed);
  return reply;
}

}  // namespace

std::string error_text(int status, const json& body) {
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const json& e = body["error"];
    std::string code = e.value("code", "");
    std::string message = e.value("message", "");
    return fmt::format("{} {}{}", status, code.empty() ? "" : code + ": ", message);
  }
  return fmt::format("HTTP {}", status);
}

Reply Client::get(const std::string& path) const {
  auto client = connect(url_);
  return finish(url_, client->Get(path.c_str(), headers_for(token_)));
}

Reply Client::post_json(const std::string& path, const json& body) const {
  auto client = connect(url_);
  return finish(url_, client->Post(path.c_str(), headers_for(token_), body.dump(), "application/json"));
}

Reply Client::put_json(const std::string& path, const json& body) const {
  auto client = connect(url_);
  return finish(url_, client->Put(path.c_str(), headers_for(token_), body.dump(), "application/json"));
}

Reply Client::del(const std::string& path) const {
  auto client = connect(url_);
  return finish(url_, client->Delete(path.c_str(), headers_for(token_)));
}

Reply Client::post_image(const std::string& path, const std::string& filename, const std::string& content) const {
  auto client = connect(url_);
  httplib::MultipartFormDataItems items{{"image", content, filename, "application/octet-stream"}};
  return finish(url_, client->Post(path.c_str(), headers_for(token_), items));
}

}  // namespace mlswarm::cli_tool
