#pragma once

// Peers that misbehave on purpose, for the integration tests of a controller facing a hostile
// or broken network: a fake trainer (an HTTP server in the test process that answers as the
// test tells it and records what it was sent) and a proxy that delays a real trainer's
// answers to dispatches.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mlswarm::testing {

/// host:port as a socket address.
inline sockaddr_in ipv4_address(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  return a;
}

/// A listening TCP socket on host:port (SO_REUSEADDR, backlog 64), or -1.
inline int listen_tcp(const std::string& host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const sockaddr_in a = ipv4_address(host, port);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0 && ::listen(fd, 64) == 0) return fd;
  ::close(fd);
  return -1;
}

/// One request as a fake peer saw it.
struct SeenRequest {
  std::string method;
  std::string path;
  std::string headers;  ///< "name: value" lines
  std::string body;
};

/// An HTTP server on host:port that answers GET /type as a trainer and everything else with
/// `handler`, and records every request. Runs on its own threads until destroyed.
class FakeTrainer {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  FakeTrainer(const std::string& host, int port, Handler handler) : handler_(std::move(handler)) {
    auto record_and_answer = [this](const httplib::Request& req, httplib::Response& res) {
      SeenRequest seen{req.method, req.path, {}, req.body};
      for (const auto& [k, v] : req.headers) seen.headers += k + ": " + v + "\n";
      {
        std::lock_guard lock(mutex_);
        seen_.push_back(std::move(seen));
      }
      if (req.method == "GET" && req.path == "/type") {
        res.set_content(R"({"type":"train"})", "application/json");
        return;
      }
      handler_(req, res);
    };
    server_.Get(".*", record_and_answer);
    server_.Post(".*", record_and_answer);
    server_.Delete(".*", record_and_answer);
    server_.set_payload_max_length(std::size_t{1} << 30);
    ok_ = server_.bind_to_port(host.c_str(), port);
    if (ok_) thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FakeTrainer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  FakeTrainer(const FakeTrainer&) = delete;
  FakeTrainer& operator=(const FakeTrainer&) = delete;

  bool listening() const { return ok_; }

  std::vector<SeenRequest> seen() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  std::size_t count(const std::string& method, const std::string& path) const {
    std::size_t n = 0;
    for (const auto& r : seen()) n += r.method == method && r.path == path ? 1 : 0;
    return n;
  }

 private:
  Handler handler_;
  httplib::Server server_;
  bool ok_ = false;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<SeenRequest> seen_;
};

/// A TCP proxy from listen_host:listen_port to a real trainer at upstream_port on the same
/// host. Each connection carries one request (the controller sends Connection: close); the
/// request goes upstream at once, and the answer to a POST /train is held back for `delay`
/// before it goes to the client: the trainer takes the job, the controller hears of it late.
class SlowDispatchProxy {
 public:
  SlowDispatchProxy(const std::string& host, int listen_port, int upstream_port, std::chrono::milliseconds delay)
      : host_(host), upstream_port_(upstream_port), delay_(delay) {
    listener_ = listen_tcp(host_, listen_port);
    ok_ = listener_ >= 0;
    if (ok_) accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~SlowDispatchProxy() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    if (accept_thread_.joinable()) accept_thread_.join();
    for (auto& t : connections_) t.join();
  }
  SlowDispatchProxy(const SlowDispatchProxy&) = delete;
  SlowDispatchProxy& operator=(const SlowDispatchProxy&) = delete;

  bool listening() const { return ok_; }
  /// POST /train requests passed upstream so far.
  int dispatches() const { return dispatches_.load(); }

 private:
  void accept_loop() {
    while (!stopping_) {
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) {
        if (stopping_) return;
        continue;
      }
      connections_.emplace_back([this, client] { relay(client); });
    }
  }

  /// Reads one whole request (headers and Content-Length bytes of body) from `fd`.
  static std::string read_request(int fd) {
    std::string data;
    char buffer[65536];
    while (true) {
      const auto end = data.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::size_t length = 0;
        const auto at = data.find("Content-Length: ");
        if (at != std::string::npos && at < end) length = std::stoul(data.substr(at + 16));
        if (data.size() >= end + 4 + length) return data;
      }
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n <= 0) return data;
      data.append(buffer, static_cast<std::size_t>(n));
    }
  }

  void relay(int client) {
    const std::string request = read_request(client);
    const bool dispatch = request.rfind("POST /train ", 0) == 0;
    const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = ipv4_address(host_, upstream_port_);
    std::string reply;
    if (::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::write(upstream, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      if (dispatch) ++dispatches_;
      char buffer[65536];
      ssize_t n = 0;
      while ((n = ::read(upstream, buffer, sizeof buffer)) > 0) reply.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(upstream);
    // The misbehaviour under test: the trainer has the job, the controller hears late.
    if (dispatch) std::this_thread::sleep_for(delay_);
    [[maybe_unused]] ssize_t ignored = ::write(client, reply.data(), reply.size());
    ::close(client);
  }

  std::string host_;
  int upstream_port_;
  std::chrono::milliseconds delay_;
  int listener_ = -1;
  bool ok_ = false;
  std::atomic<bool> stopping_{false};
  std::atomic<int> dispatches_{0};
  std::thread accept_thread_;
  std::vector<std::thread> connections_;  ///< touched by the accept thread only, joined at the end
};

}  // namespace mlswarm::testing
