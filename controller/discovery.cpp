#include "discovery.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <utility>  // Boost 1.74 Asio uses std::exchange without including it

#include <boost/asio.hpp>
#include <nlohmann/json.hpp>

namespace mlswarm {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr std::size_t kMaxResponse = 8192;

/// True when an HTTP response is a 200 whose JSON body says {"type":"train"}.
bool is_trainer_response(const std::string& response) {
  if (response.rfind("HTTP/1.1 200", 0) != 0 && response.rfind("HTTP/1.0 200", 0) != 0) return false;
  std::size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return false;
  auto json = nlohmann::json::parse(response.begin() + static_cast<std::ptrdiff_t>(body) + 4, response.end(),
                                    nullptr, false);
  return json.is_object() && json.contains("type") && json["type"] == "train";
}

/// One probe: connect, send GET /type, read to EOF, each step under a deadline.
class Probe : public std::enable_shared_from_this<Probe> {
 public:
  Probe(asio::io_context& io, tcp::endpoint endpoint, const ScanOptions& options,
        std::function<void(bool)> done)
      : socket_(io), timer_(io), endpoint_(endpoint), options_(options), done_(std::move(done)) {
    request_ = "GET /type HTTP/1.1\r\nHost: " + endpoint.address().to_string() +
               "\r\nConnection: close\r\nUser-Agent: mlswarm-discovery\r\n\r\n";
  }

  void start() {
    arm(options_.connect_timeout);
    socket_.async_connect(endpoint_, [self = shared_from_this()](boost::system::error_code ec) {
      self->on_connect(ec);
    });
  }

 private:
  void arm(std::chrono::milliseconds timeout) {
    timer_.expires_after(timeout);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->finish(false);  // deadline passed; a cancelled wait is not an error
    });
  }

  void on_connect(boost::system::error_code ec) {
    if (finished_) return;
    if (ec) return finish(false);
    arm(options_.read_timeout);
    asio::async_write(socket_, asio::buffer(request_),
                      [self = shared_from_this()](boost::system::error_code ec2, std::size_t) {
                        if (self->finished_) return;
                        if (ec2) return self->finish(false);
                        self->do_read();
                      });
  }

  void do_read() {
    socket_.async_read_some(asio::buffer(buffer_),
                            [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                              self->on_read(ec, n);
                            });
  }

  void on_read(boost::system::error_code ec, std::size_t n) {
    if (finished_) return;
    response_.append(buffer_.data(), n);
    if (ec == asio::error::eof || response_.size() >= kMaxResponse) return finish(is_trainer_response(response_));
    if (ec) return finish(false);
    do_read();
  }

  void finish(bool is_trainer) {
    if (finished_) return;
    finished_ = true;
    boost::system::error_code ignored;
    timer_.cancel();
    socket_.close(ignored);
    done_(is_trainer);
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  tcp::endpoint endpoint_;
  const ScanOptions& options_;
  std::function<void(bool)> done_;
  std::string request_;
  std::string response_;
  std::array<char, 2048> buffer_{};
  bool finished_ = false;
};

}  // namespace

SubnetScanner::SubnetScanner(Subnet subnet, ScanOptions options) : subnet_(subnet), options_(options) {}

std::vector<std::string> SubnetScanner::scan_once() const { return probe(subnet_.hosts()); }

std::vector<std::string> SubnetScanner::probe(const std::vector<std::string>& hosts, bool inside_subnet_only) const {
  asio::io_context io;
  std::vector<std::string> found;
  std::size_t next = 0;
  int in_flight = 0;
  const auto port = static_cast<unsigned short>(options_.port);

  std::function<void()> launch = [&] {
    while (in_flight < options_.max_in_flight && next < hosts.size()) {
      const std::string& host = hosts[next++];
      boost::system::error_code ec;
      auto address = asio::ip::make_address_v4(host, ec);
      // Only addresses inside SUBNET_TRAIN are ever contacted.
      if (ec || (inside_subnet_only && !subnet_.contains(address.to_uint()))) continue;
      ++in_flight;
      auto label = host + ":" + std::to_string(port);
      std::make_shared<Probe>(io, tcp::endpoint(address, port), options_, [&, label](bool is_trainer) {
        --in_flight;
        if (is_trainer) found.push_back(label);
        asio::post(io, launch);
      })->start();
    }
  };
  launch();
  io.run();
  std::sort(found.begin(), found.end());
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
