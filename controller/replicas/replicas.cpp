#include "replicas.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <unistd.h>

#include <httplib.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/log.h"

namespace mlswarm {

Replicas::Replicas(Leadership& leadership, JobRegistry& registry, Cluster& cluster, Options options)
    : leadership_(leadership), registry_(registry), cluster_(cluster), options_(std::move(options)) {
  registry_.set_fence([this](const std::function<void()>& write) { return leadership_.fenced(write); },
                      [this] { return leadership_.view().term; });
  leadership_.set_term_floor([this] { return registry_.max_term(); });
}

Replicas::~Replicas() { stop(); }

void Replicas::start() {
  try {
    follow_view(leadership_.tick());
  } catch (const std::exception& e) {
    spdlog::error("controller: election: {}", e.what());
  }
  thread_ = std::jthread([this](std::stop_token stop) { loop(stop); });
}

void Replicas::drain() {
  if (!draining_.exchange(true)) spdlog::info("controller: draining: /readyz is 503, replies close their connection");
}

void Replicas::stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  if (leading_.exchange(false)) {
    cluster_.stop();
    registry_.stop_writing();
  }
  leadership_.release();
}

void Replicas::loop(std::stop_token stop) {
  std::mutex mutex;
  std::condition_variable_any wake;
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(mutex);
      wake.wait_for(lock, stop, leadership_.retry(), [] { return false; });
    }
    if (stop.stop_requested()) break;
    try {
      follow_view(leadership_.tick());
    } catch (const std::exception& e) {
      // One line a minute however the message varies (a full disk names a new temporary
      // file each try): issue 38 saw one every 250 ms.
      if (const std::size_t n = log_due("election", std::chrono::seconds(60))) {
        spdlog::error("controller: election: {}{}", e.what(), repeats(n, std::chrono::seconds(60)));
      }
    }
  }
}

void Replicas::follow_view(const LeaderView& view) {
  if (view.mine && !leading_) {
    registry_.start_writing();  // the rest of the journal first, then ours to append to
    cluster_.start();
    leading_ = true;
    return;
  }
  if (!view.mine && leading_) {
    leading_ = false;
    cluster_.stop();
    registry_.stop_writing();
    spdlog::warn("controller: following {} (term {}) now", view.leader, view.term);
  }
  if (!view.mine) registry_.refresh();
}

ReplicaHooks Replicas::hooks() {
  ReplicaHooks h;
  h.forward_to_leader = [this](const HttpRequest& request) { return forward(request); };
  h.describe = [this] {
    const LeaderView v = leadership_.view();
    return nlohmann::json{{"address", options_.address},
                          {"role", v.mine ? "leader" : "follower"},
                          {"leader", v.leader},
                          {"term", v.term},
                          {"draining", draining_.load()}};
  };
  h.not_ready = [this]() -> std::optional<std::string> {
    if (draining_) return std::string("draining: this controller is shutting down");
    return std::nullopt;
  };
  h.following = [this] { return !leadership_.view().mine; };
  return h;
}

std::optional<HttpReply> Replicas::forward(const HttpRequest& request) const {
  const LeaderView view = leadership_.view();
  if (view.mine) return std::nullopt;
  // One hop at most: a write another replica forwarded here as to the leader, while this one
  // follows too (the lead is changing hands), is refused rather than sent on and on.
  if (const std::string by = request.header("x-mlswarm-forwarded-by"); !by.empty()) {
    throw Error(ErrorCode::kUnavailable,
                fmt::format("{} forwarded this write here as to the leader, but this replica follows {}: the lead is "
                            "changing; try again in a few seconds",
                            by.substr(0, 64), view.leader.empty() ? "no one" : view.leader));
  }
  if (view.leader.empty() || view.leader == options_.address) {
    throw Error(ErrorCode::kUnavailable, "no controller leads right now; try again in a few seconds");
  }
  const auto colon = view.leader.rfind(':');
  const std::string host = view.leader.substr(0, colon);
  const int port = std::atoi(view.leader.substr(colon + 1).c_str());
  std::unique_ptr<httplib::ClientImpl> client;
  if (options_.tls) {
    auto tls = std::make_unique<httplib::SSLClient>(host, port);
    tls->enable_server_certificate_verification(false);
    client = std::move(tls);
  } else {
    client = std::make_unique<httplib::ClientImpl>(host, port);
  }
  client->set_connection_timeout(std::chrono::milliseconds(1000));
  client->set_read_timeout(options_.forward_timeout);
  client->set_write_timeout(options_.forward_timeout);
  httplib::Headers headers;
  for (const char* name : {"authorization", "content-type"}) {
    if (const std::string value = request.header(name); !value.empty()) headers.emplace(name, value);
  }
  headers.emplace("X-Request-Id", request.request_id);
  headers.emplace("X-Mlswarm-Forwarded-By", options_.address);
  const std::string target = request.target.empty() ? request.path : request.target;
  const std::string type =
      request.header("content-type").empty() ? std::string("application/json") : request.header("content-type");
  httplib::Result result = request.method == "DELETE" ? client->Delete(target.c_str(), headers)
                           : request.method == "PUT"
                               ? client->Put(target.c_str(), headers, request.body, type.c_str())
                               : client->Post(target.c_str(), headers, request.body, type.c_str());
  if (!result) {
    throw Error(ErrorCode::kUnavailable, fmt::format("the leader at {} does not answer ({}); try again", view.leader,
                                                     httplib::to_string(result.error())));
  }
  HttpReply reply;
  reply.status = result->status;
  reply.body = result->body;
  reply.content_type = result->get_header_value("Content-Type");
  if (reply.content_type.empty()) reply.content_type = "application/json";
  reply.headers["X-Forwarded-To"] = view.leader;
  return reply;
}

std::string advertised_address(const std::string& advertise, const std::string& host, int port,
                               const std::optional<Subnet>& subnet) {
  if (!advertise.empty())
    return advertise.find(':') == std::string::npos ? fmt::format("{}:{}", advertise, port) : advertise;
  if (!host.empty() && host != "0.0.0.0") return fmt::format("{}:{}", host, port);
  std::string found;
  ifaddrs* interfaces = nullptr;
  if (subnet && ::getifaddrs(&interfaces) == 0) {
    for (ifaddrs* i = interfaces; i != nullptr && found.empty(); i = i->ifa_next) {
      if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
      const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      if (subnet->contains(ntohl(in->sin_addr.s_addr))) {
        char text[INET_ADDRSTRLEN] = {};
        ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        found = text;
      }
    }
    ::freeifaddrs(interfaces);
  }
  if (found.empty()) {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    addrinfo hints{};
    hints.ai_family = AF_INET;
    addrinfo* result = nullptr;
    if (::getaddrinfo(name, nullptr, &hints, &result) == 0 && result != nullptr) {
      char text[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(result->ai_addr)->sin_addr, text, sizeof text);
      found = text;
      ::freeaddrinfo(result);
    }
  }
  return fmt::format("{}:{}", found.empty() ? "127.0.0.1" : found, port);
}

}  // namespace mlswarm
