// Discovery: the time of one pass over a /24 with N live trainers (in-process servers that
// answer GET /type like ml_trainer) and every other host absent, next to the seed's approach
// (one host after another, each probe waiting for its answer) in the same run.
// On loopback an absent host refuses at once; on an overlay it stays silent until the
// connect deadline. `--silent N` adds N hosts that accept the connection and never answer
// (a hung process, or a host that swallows packets), which is where the two approaches part.

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <tuple>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "discovery.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double worst(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

/// The hosts of the benchmark's subnet: `live` in-process trainers on 127.0.0.2 and up that
/// answer GET /type, and `silent` sockets on 127.0.0.254 and down that listen and never answer.
class FakeSubnet {
 public:
  FakeSubnet(int live, int silent, int port) {
    for (int i = 0; i < live; ++i) add_live(fmt::format("127.0.0.{}", i + 2), port);
    for (int i = 0; i < silent; ++i) add_silent(fmt::format("127.0.0.{}", 254 - i), port);
    for (auto& s : servers_) {
      while (!s->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ~FakeSubnet() {
    for (int fd : silent_fds_) ::close(fd);
    for (auto& s : servers_) s->stop();
    for (auto& t : threads_) t.join();
  }
  FakeSubnet(const FakeSubnet&) = delete;
  FakeSubnet& operator=(const FakeSubnet&) = delete;
  bool ok() const { return ok_; }

 private:
  void add_live(const std::string& host, int port) {
    auto server = std::make_unique<httplib::Server>();
    server->Get("/type", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"type":"train"})", "application/json");
    });
    if (!server->bind_to_port(host.c_str(), port)) {
      std::cerr << "cannot bind " << host << ":" << port << "\n";
      ok_ = false;
      return;
    }
    threads_.emplace_back([s = server.get()] { s->listen_after_bind(); });
    servers_.push_back(std::move(server));
  }
  void add_silent(const std::string& host, int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 64) != 0) ok_ = false;
    silent_fds_.push_back(fd);  // listening, never accepting, never answering
  }

  std::vector<std::unique_ptr<httplib::Server>> servers_;
  std::vector<std::thread> threads_;
  std::vector<int> silent_fds_;
  bool ok_ = true;
};

/// Milliseconds `pass` took, and what it found.
template <typename Pass>
std::pair<double, std::size_t> time_pass(Pass&& pass) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::size_t found = pass();
  return {std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(), found};
}

/// The seed's way: one blocking probe per host, in order.
std::size_t sequential_pass(const mlswarm::SubnetScanner& scanner, int port) {
  std::size_t n = 0;
  for (const auto& host : scanner.subnet().hosts()) {
    httplib::Client client(host, port);
    client.set_connection_timeout(std::chrono::milliseconds(300));
    client.set_read_timeout(std::chrono::milliseconds(500));
    auto res = client.Get("/type");
    n += res && res->status == 200 && res->body.find("train") != std::string::npos ? 1 : 0;
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int live = 4, silent = 0, passes = 10, port = 48599;
  CLI::App app{"discovery benchmark over 127.0.0.0/24"};
  app.add_option("--live", live, "trainers that answer")->check(CLI::Range(0, 200));
  app.add_option("--silent", silent, "hosts that accept and never answer")->check(CLI::Range(0, 200));
  app.add_option("--passes", passes);
  app.add_option("--port", port);
  CLI11_PARSE(app, argc, argv);

  FakeSubnet subnet(live, silent, port);
  if (!subnet.ok()) return 1;
  mlswarm::ScanOptions options;
  options.port = port;
  mlswarm::SubnetScanner scanner(mlswarm::parse_subnet("127.0.0.0/24"), options);
  std::vector<double> concurrent, sequential;
  std::size_t found_c = 0, found_s = 0;
  for (int p = 0; p < passes; ++p) {
    double ms = 0;
    std::tie(ms, found_c) = time_pass([&] { return scanner.scan_once().size(); });
    concurrent.push_back(ms);
    std::tie(ms, found_s) = time_pass([&] { return sequential_pass(scanner, port); });
    sequential.push_back(ms);
  }
  std::cout << fmt::format(
      "one pass over 127.0.0.0/24 (254 hosts, {} live, {} silent), {} passes:\n"
      "  mlswarm concurrent scan: median {:.1f} ms, worst {:.1f} ms, found {}\n"
      "  sequential (seed-style): median {:.1f} ms, worst {:.1f} ms, found {}\n",
      live, silent, passes, median(concurrent), worst(concurrent), found_c, median(sequential), worst(sequential),
      found_s);
  return found_c == static_cast<std::size_t>(live) ? 0 : 1;
}
