#include "load.h"
#include "mlswarm/ports.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace mlswarm::cli_tool {
namespace {

using Clock = std::chrono::steady_clock;

struct Target {
  bool tls = false;
  std::string host;
  int port = kDefaultControllerPort;
};

Target parse_url(const std::string& url) {
  Target t;
  std::string rest = url;
  if (rest.rfind("https://", 0) == 0) {
    t.tls = true;
    rest = rest.substr(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
  }
  rest = rest.substr(0, rest.find('/'));
  const auto colon = rest.rfind(':');
  t.host = rest.substr(0, colon);
  if (colon != std::string::npos) t.port = std::atoi(rest.substr(colon + 1).c_str());
  return t;
}

/// The name's IPv4 addresses (every replica behind a DNS round-robin name), or the name itself.
std::vector<std::string> resolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  std::vector<std::string> out;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &result) == 0) {
    for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
      char text[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, text, sizeof text);
      if (std::find(out.begin(), out.end(), text) == out.end()) out.emplace_back(text);
    }
    ::freeaddrinfo(result);
  }
  if (out.empty()) out.push_back(host);
  return out;
}

/// One client's connection, to one of the name's addresses.
class Connection {
 public:
  Connection(const Target& target, const LoadOptions& options, std::size_t seed)
      : target_(target), options_(options), next_(seed), client_index_(seed) {
    reconnect();
  }
  /// POSTs the body. When nothing comes back it reconnects and sends it again, trying each of
  /// the name's addresses once (as a client of a DNS round-robin name does: a replica that just
  /// stopped can stay in the answer for a moment).
  httplib::Result post() {
    tried_.clear();
    auto res = send();
    for (std::size_t tries = 0; !res && tries < std::max<std::size_t>(1, addresses_); ++tries) {
      tried_ += (tried_.empty() ? "" : ", ") + address_ + " " + httplib::to_string(res.error());
      reconnect(address_);
      res = send();
    }
    if (!res) tried_ += (tried_.empty() ? "" : ", ") + address_ + " " + httplib::to_string(res.error());
    answered_by_ = address_;
    if (res && res->get_header_value("Connection") == "close") reconnect(address_);  // the replica is draining
    return res;
  }
  /// The address that answered the last post().
  const std::string& answered_by() const { return answered_by_; }
  /// Each address the last post() tried and what went wrong there, when nothing answered.
  const std::string& tried() const { return tried_; }

 private:
  httplib::Result send() {
    httplib::Headers headers;
    if (!options_.token.empty()) headers.emplace("Authorization", "Bearer " + options_.token);
    for (const auto& [name, value] : options_.headers) headers.emplace(name, value);
    if (!options_.key_header.empty()) headers.emplace(options_.key_header, "client-" + std::to_string(client_index_));
    return client_->Post(options_.path.c_str(), headers, options_.body, options_.content_type.c_str());
  }
  /// Connects to the next of the name's addresses (in sorted order, since DNS servers shuffle
  /// them), skipping `avoid` (the one that just failed) when there is another. When the name
  /// does not resolve at that moment (a DNS server busy with a node that just died), the
  /// addresses it had last time stand in: a hiccup of DNS does not make the client forget the
  /// replicas it knew.
  void reconnect(std::string avoid = {}) {  // a copy: callers pass address_, which this reassigns
    auto addresses = resolve(target_.host);
    if (addresses.size() == 1 && addresses.front() == target_.host && !known_.empty()) addresses = known_;
    std::sort(addresses.begin(), addresses.end());
    known_ = addresses;
    addresses_ = addresses.size();
    address_ = addresses[next_++ % addresses.size()];
    if (address_ == avoid && addresses.size() > 1) address_ = addresses[next_++ % addresses.size()];
    if (target_.tls) {
      auto tls = std::make_unique<httplib::SSLClient>(address_, target_.port);
      tls->enable_server_certificate_verification(false);
      client_ = std::move(tls);
    } else {
      client_ = std::make_unique<httplib::ClientImpl>(address_, target_.port);
    }
    client_->set_keep_alive(true);
    client_->set_tcp_nodelay(true);  // else Nagle + delayed ACK put 40 ms on every request
    client_->set_connection_timeout(std::chrono::seconds(2));
    client_->set_read_timeout(std::chrono::seconds(30));
  }

  Target target_;
  const LoadOptions& options_;
  std::size_t next_;
  std::size_t client_index_;
  std::size_t addresses_ = 1;       ///< how many addresses the name had at the last reconnect
  std::vector<std::string> known_;  ///< the addresses of the last resolution
  std::string tried_;
  std::string address_, answered_by_;
  std::unique_ptr<httplib::ClientImpl> client_;
};

/// `, "per_second": [{"second": 0, "requests": n, "p99_ms": x}, ...]`: each whole second's answers.
std::string per_second_json(const std::vector<std::vector<double>>& latencies,
                            const std::vector<std::vector<double>>& answered_at) {
  std::map<long, std::vector<double>> by_second;
  for (std::size_t c = 0; c < latencies.size(); ++c) {
    for (std::size_t i = 0; i < latencies[c].size() && i < answered_at[c].size(); ++i) {
      by_second[static_cast<long>(answered_at[c][i])].push_back(latencies[c][i]);
    }
  }
  std::string out;
  for (auto& [second, ms] : by_second) {
    std::sort(ms.begin(), ms.end());
    const double p99 = ms[std::min(ms.size() - 1, static_cast<std::size_t>(0.99 * static_cast<double>(ms.size())))];
    out += fmt::format(R"({}{{"second": {}, "requests": {}, "p99_ms": {:.2f}}})", out.empty() ? "" : ", ", second,
                       ms.size(), p99);
  }
  return fmt::format(R"(, "per_second": [{}])", out);
}

/// Prints the run's JSON line; the exit code (1 when nothing was answered or anything failed).
int report(const LoadOptions& options, const std::vector<std::vector<double>>& latencies,
           const std::vector<std::vector<double>>& answered_at,
           const std::vector<std::map<std::string, long>>& answered, double elapsed, long sent, long failed) {
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0
                       : all[std::min(all.size() - 1, static_cast<std::size_t>(p * static_cast<double>(all.size())))];
  };
  std::map<std::string, long> by_address;
  for (const auto& per_client : answered) {
    for (const auto& [address, n] : per_client) by_address[address] += n;
  }
  std::string served;
  for (const auto& [address, n] : by_address)
    served += fmt::format(R"({}"{}": {})", served.empty() ? "" : ", ", address, n);
  std::cout << fmt::format(
                   R"({{"label": "{}", "clients": {}, "requests": {}, "requests_per_s": {:.1f}, "p50_ms": {:.2f}, )"
                   R"("p99_ms": {:.2f}, "sent": {}, "failed": {}, "answered_by": {{{}}}{}}})",
                   options.label, options.clients, all.size(), static_cast<double>(all.size()) / elapsed, pct(0.50),
                   pct(0.99), sent, failed, served, options.per_second ? per_second_json(latencies, answered_at) : "")
            << std::endl;
  return all.empty() || failed > 0 ? 1 : 0;
}

}  // namespace

int run_load(const LoadOptions& options) {
  const Target target = parse_url(options.url);
  std::atomic<bool> measuring{false}, done{false};
  std::atomic<long> failed{0}, sent{0};
  std::vector<std::vector<double>> latencies(static_cast<std::size_t>(options.clients));
  // With per_second: when each measured answer came, in seconds since the measuring began.
  std::vector<std::vector<double>> answered_at(static_cast<std::size_t>(options.clients));
  Clock::time_point measure_start{};
  // Answered requests per address, over the whole run: which replicas served.
  std::vector<std::map<std::string, long>> answered(static_cast<std::size_t>(options.clients));
  std::vector<std::thread> threads;
  for (int c = 0; c < options.clients; ++c) {
    threads.emplace_back([&, c] {
      Connection connection(target, options, static_cast<std::size_t>(c));
      while (!done) {
        const auto t0 = Clock::now();
        auto res = connection.post();
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        ++sent;
        if (!res || res->status != options.expect_status) {
          if (++failed <= 5) {
            // One write per line: the clients' threads print at once.
            std::cerr << fmt::format(
                "request failed: {}\n",
                res ? fmt::format("{} {}", res->status, res->body.substr(0, 200)) : connection.tried());
          }
          continue;
        }
        ++answered[static_cast<std::size_t>(c)][connection.answered_by()];
        if (measuring) {
          latencies[static_cast<std::size_t>(c)].push_back(ms);
          if (options.per_second) {
            answered_at[static_cast<std::size_t>(c)].push_back(
                std::chrono::duration<double>(Clock::now() - measure_start).count());
          }
        }
      }
    });
  }
  std::this_thread::sleep_for(options.warmup);
  measure_start = Clock::now();  // before `measuring` is set: the clients read it after
  measuring = true;
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(options.seconds);
  measuring = false;
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  done = true;
  for (auto& t : threads) t.join();
  return report(options, latencies, answered_at, answered, elapsed, sent.load(), failed.load());
}

}  // namespace mlswarm::cli_tool
