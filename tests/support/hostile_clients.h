#pragma once

// Clients that attack the HTTP edge on purpose, from 127.0.0.66 (a host on the subnet): they
// run on a thread of their own until destroyed.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "raw_client.h"

namespace mlswarm::testing {

using namespace std::chrono_literals;

inline constexpr const char* kAttacker = "127.0.0.66";

/// GET /healthz on a fresh connection to host:port answered 200 within 1 s.
inline bool healthz_in_time(const std::string& host, int port) {
  const auto t0 = std::chrono::steady_clock::now();
  RawClient probe(port, "127.0.0.1", host.c_str());
  if (!probe.connected() || !probe.send("GET /healthz HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")) {
    return false;
  }
  const std::string got = probe.read_until("\"ok\"", 1000ms);
  return got.find(" 200 ") != std::string::npos && std::chrono::steady_clock::now() - t0 < 1s;
}

/// Connections that each send an unauthenticated POST /train announcing a megabyte, whose body
/// comes a byte every 2 s; `hijack`: after a GET /healthz in the same send, so that the
/// connection is a probe's (issue 38: /healthz answered 0 of 10 probes; eight trickled POSTs
/// held a trainer's eight HTTP threads). Each is reopened when the server closes it, until stopped.
class Hijackers {
 public:
  Hijackers(std::string host, int port, int count, bool hijack = true)
      : host_(std::move(host)), port_(port), hijack_(hijack) {
    for (int i = 0; i < count; ++i) open(i);
    thread_ = std::thread([this] { run(); });
  }
  ~Hijackers() {
    stop_ = true;
    thread_.join();
  }
  int reopened() const { return reopened_.load(); }

 private:
  void open(std::size_t i) {
    if (connections_.size() <= i) connections_.resize(i + 1);
    connections_[i] = std::make_unique<RawClient>(port_, kAttacker, host_.c_str());
    connections_[i]->send(std::string(hijack_ ? "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n" : "") +
                          "POST /train HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                          "Content-Length: 1000000\r\n\r\n{");
  }
  void run() {
    while (!stop_) {
      for (std::size_t i = 0; i < connections_.size() && !stop_; ++i) {
        if (connections_[i]->closed_now()) {
          open(i);
          ++reopened_;
        } else {
          connections_[i]->send("1");
        }
      }
      for (int t = 0; t < 200 && !stop_; ++t) std::this_thread::sleep_for(10ms);  // a byte every 2 s each
    }
  }

  std::string host_;
  int port_;
  bool hijack_;
  std::vector<std::unique_ptr<RawClient>> connections_;
  std::atomic<bool> stop_{false};
  std::atomic<int> reopened_{0};
  std::thread thread_;
};

/// Connections that send half a request head and then nothing, reopened as the server closes
/// them: a flood of idle heads.
class IdleHeads {
 public:
  IdleHeads(std::string host, int port, int count) : host_(std::move(host)), port_(port), count_(count) {
    thread_ = std::thread([this] { run(); });
  }
  ~IdleHeads() {
    stop_ = true;
    thread_.join();
  }

 private:
  void run() {
    std::vector<std::unique_ptr<RawClient>> open;
    while (!stop_) {
      std::erase_if(open, [](auto& c) { return c->closed_now(); });
      while (static_cast<int>(open.size()) < count_ && !stop_) {
        auto c = std::make_unique<RawClient>(port_, kAttacker, host_.c_str());
        if (!c->connected()) break;  // the daemon is down (chaos): try again later
        c->send("GET /status HTTP/1.1\r\nX-Idle: ");
        open.push_back(std::move(c));
      }
      for (int t = 0; t < 50 && !stop_; ++t) std::this_thread::sleep_for(10ms);
    }
  }

  std::string host_;
  int port_;
  int count_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace mlswarm::testing
