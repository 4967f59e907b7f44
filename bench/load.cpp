// A small closed-loop HTTP load generator: C clients, each sending one request after
// another for D seconds; prints requests/s and latency percentiles as one JSON line.

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", path = "/predict", body_file, label = "server";
  int port = 48515, clients = 16;
  double seconds = 10, warmup = 2;
  CLI::App app{"closed-loop HTTP POST load generator"};
  app.add_option("--host", host);
  app.add_option("--port", port);
  app.add_option("--path", path);
  app.add_option("--body-file", body_file, "JSON body to POST")->required();
  app.add_option("--clients", clients);
  app.add_option("--seconds", seconds);
  app.add_option("--warmup", warmup);
  app.add_option("--label", label);
  CLI11_PARSE(app, argc, argv);
  std::ifstream in(body_file);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string body = ss.str();

  using Clock = std::chrono::steady_clock;
  std::atomic<bool> measuring{false}, done{false};
  std::atomic<long> errors{0};
  std::vector<std::vector<double>> latencies(static_cast<std::size_t>(clients));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      httplib::Client client(host, port);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);  // else Nagle + delayed ACK put 40 ms on every request
      client.set_read_timeout(std::chrono::seconds(30));
      while (!done) {
        auto t0 = Clock::now();
        auto res = client.Post(path.c_str(), body, "application/json");
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!res || res->status != 200) {
          ++errors;
          continue;
        }
        if (measuring) latencies[static_cast<std::size_t>(c)].push_back(ms);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  measuring = true;
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  done = true;
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<std::size_t>(p * all.size()))]; };
  std::cout << fmt::format(R"({{"label": "{}", "clients": {}, "requests": {}, "requests_per_s": {:.1f}, "p50_ms": {:.2f}, "p99_ms": {:.2f}, "errors": {}}})",
                           label, clients, all.size(), all.size() / elapsed, pct(0.50), pct(0.99), errors.load())
            << std::endl;
  return all.empty() ? 1 : 0;
}
