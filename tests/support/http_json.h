#pragma once

#include <httplib.h>

#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace mlswarm::testing {

/// GET `path` and parse the body; {"transport_error": ...} when nothing answered.
template <typename Client>
inline nlohmann::json get_json(Client& client, const std::string& path) {
  auto res = client.Get(path.c_str());
  if (!res) return {{"transport_error", httplib::to_string(res.error())}};
  auto body = nlohmann::json::parse(res->body, nullptr, false);
  return body.is_discarded() ? nlohmann::json{{"unparsable", res->body}} : body;
}

/// POST a JSON body; returns the status (-1 when nothing answered) and the parsed reply.
inline std::pair<int, nlohmann::json> post_json(httplib::Client& client, const std::string& path,
                                                const std::string& body) {
  auto res = client.Post(path.c_str(), body, "application/json");
  if (!res) return {-1, nlohmann::json()};
  auto parsed = nlohmann::json::parse(res->body, nullptr, false);
  return {res->status, parsed.is_discarded() ? nlohmann::json() : parsed};
}

}  // namespace mlswarm::testing
