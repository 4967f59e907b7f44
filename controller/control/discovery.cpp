#include "discovery.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <utility>  // Boost 1.74 Asio uses std::exchange without including it

#include <boost/asio.hpp>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "http_call.h"
#include "mlswarm/auth.h"
#include "mlswarm/signing.h"

namespace mlswarm {
namespace {

namespace asio = boost::asio;

constexpr std::size_t kMaxProbeReply = 8192;

}  // namespace

ProbeVerdict judge_probe_reply(int status, const std::string& body, const std::string& expected_proof) {
  ProbeVerdict verdict;
  if (status != 200) return verdict;
  const auto json = nlohmann::json::parse(body, nullptr, false);
  if (!json.is_object()) return verdict;
  const auto type = json.find("type");
  verdict.trainer = type != json.end() && type->is_string() && type->get<std::string>() == "train";
  if (!verdict.trainer || expected_proof.empty()) {
    verdict.trusted = verdict.trainer;
    return verdict;
  }
  const auto proof = json.find("proof");
  verdict.trusted =
      proof != json.end() && proof->is_string() && tokens_equal(proof->get<std::string>(), expected_proof);
  return verdict;
}

SubnetScanner::SubnetScanner(Subnet subnet, ScanOptions options) : subnet_(subnet), options_(std::move(options)) {}

std::vector<DiscoveredTrainer> SubnetScanner::scan_once() const { return probe(subnet_.hosts()); }

std::vector<DiscoveredTrainer> SubnetScanner::probe(const std::vector<std::string>& hosts,
                                                    bool inside_subnet_only) const {
  asio::io_context io;
  std::vector<DiscoveredTrainer> found;
  std::size_t next = 0;
  int in_flight = 0;
  const HttpCallLimits limits{options_.connect_timeout, options_.connect_timeout + options_.read_timeout,
                              kMaxProbeReply};

  std::function<void()> launch = [&] {
    while (in_flight < options_.max_in_flight && next < hosts.size()) {
      const std::string& host = hosts[next++];
      std::uint32_t address = 0;
      // Only addresses inside SUBNET_TRAIN are ever contacted.
      if (!parse_ipv4(host, address) || (inside_subnet_only && !subnet_.contains(address))) continue;
      ++in_flight;
      HttpCall call;
      call.address = host + ":" + std::to_string(options_.port);
      call.target = "/type";
      std::string expected;
      if (!options_.cluster_key.empty()) {
        const std::string challenge = random_hex(16);
        expected = challenge_proof(options_.cluster_key, challenge, call.address);
        call.headers.emplace_back(kChallengeHeader, challenge);
      }
      std::string label = call.address;
      async_http_call(io, std::move(call), limits, [&, label, expected](HttpCallResult result) {
        --in_flight;
        const ProbeVerdict v = judge_probe_reply(result.status, result.body, expected);
        if (v.trainer) found.push_back({label, v.trusted});
        asio::post(io, launch);
      });
    }
  };
  // One deadline for the whole pass: whatever the peers do, a pass ends by it, with what it
  // found so far; nothing a peer sends escapes it as an exception.
  asio::steady_timer pass_deadline(io, options_.pass_timeout);
  bool cut_short = false;
  pass_deadline.async_wait([&](boost::system::error_code e) {
    if (e) return;
    cut_short = true;
    io.stop();
  });
  try {
    launch();
    while (!(in_flight == 0 && next >= hosts.size()) && !io.stopped()) io.run_one();
  } catch (const std::exception& e) {
    spdlog::warn("discovery: a pass ended early: {}", e.what());
  }
  if (cut_short) {
    spdlog::warn("discovery: a pass hit its {} ms deadline with {} probes open and {} hosts not probed",
                 options_.pass_timeout.count(), in_flight, hosts.size() - std::min(next, hosts.size()));
  }
  std::sort(found.begin(), found.end(),
            [](const DiscoveredTrainer& a, const DiscoveredTrainer& b) { return a.address < b.address; });
  return found;
}

std::vector<std::string> resolve_ipv4(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  std::vector<std::string> out;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &result) != 0) return out;
  for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
    char text[INET_ADDRSTRLEN] = {};
    auto* in = reinterpret_cast<sockaddr_in*>(a->ai_addr);
    if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) != nullptr) out.emplace_back(text);
  }
  ::freeaddrinfo(result);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace mlswarm
