#include "trainer_client.h"

#include <httplib.h>

namespace mlswarm {
namespace {

template <typename Call>
TrainerReply call(const std::string& address, const TrainerCallOptions& options, Call&& make_call) {
  TrainerReply reply;
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    reply.transport_error = "address without a port";
    return reply;
  }
  httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  client.set_connection_timeout(options.connect_timeout);
  client.set_read_timeout(options.read_timeout);
  client.set_write_timeout(options.read_timeout);
  client.set_keep_alive(false);
  client.set_tcp_nodelay(true);
  httplib::Headers headers;
  if (!options.cluster_token.empty()) headers.emplace("Authorization", "Bearer " + options.cluster_token);
  if (!options.request_id.empty()) headers.emplace("X-Request-Id", options.request_id);
  httplib::Result result = make_call(client, headers);
  if (!result) {
    reply.transport_error = httplib::to_string(result.error());
    return reply;
  }
  reply.status = result->status;
  reply.body = nlohmann::json::parse(result->body, nullptr, false);
  if (reply.body.is_discarded()) reply.body = nullptr;
  return reply;
}

}  // namespace

TrainerReply trainer_get(const std::string& address, const std::string& path, const TrainerCallOptions& options) {
  return call(address, options, [&](httplib::Client& c, const httplib::Headers& h) { return c.Get(path.c_str(), h); });
}

TrainerReply trainer_post(const std::string& address, const std::string& path, const nlohmann::json& body,
                          const TrainerCallOptions& options) {
  std::string text = body.dump();
  return call(address, options,
              [&](httplib::Client& c, const httplib::Headers& h) { return c.Post(path.c_str(), h, text, "application/json"); });
}

TrainerReply trainer_delete(const std::string& address, const std::string& path, const TrainerCallOptions& options) {
  return call(address, options, [&](httplib::Client& c, const httplib::Headers& h) { return c.Delete(path.c_str(), h); });
}

}  // namespace mlswarm
