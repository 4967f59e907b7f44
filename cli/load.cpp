#include "load.h"
#include "mlswarm/ports.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace mlswarm::cli_tool {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
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

/// What every client of one run shares: the target, the counters, the clock of measuring.
struct Run {
  Run(const LoadOptions& o, Target t) : options(o), target(std::move(t)) {}
  const LoadOptions& options;
  Target target;
  std::atomic<bool> measuring{false}, done{false};
  std::atomic<long> failed{0}, sent{0};
  Clock::time_point measure_start{};  ///< written before `measuring` is set; read after
  std::unique_ptr<ssl::context> tls;  ///< for https: no verification (a load test of one's own servers)
};

/// One client's results; only its own io thread writes them.
struct Tally {
  std::vector<double> latencies;         ///< ms of each answer while measuring
  std::vector<double> answered_at;       ///< with per_second: when each came, s since measuring began
  std::map<std::string, long> answered;  ///< answers per address, over the whole run
};

/// One closed-loop client: a keep-alive connection to one of the name's addresses, a request
/// at a time, on its io thread (an event loop serves all the thread's clients: a thread each
/// cost the machine under test a quarter of its CPU at 16 clients on 2 cores). When nothing
/// comes back it reconnects and sends the request again, trying each of the name's addresses
/// once (as a client of a DNS round-robin name does: a replica that just stopped can stay in
/// the answer for a moment). A connection the server closed while it was idle is replaced
/// before the next request, without counting as a try (as cpp-httplib's client did).
template <bool kTls>
class Client : public std::enable_shared_from_this<Client<kTls>> {
  using Stream = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

 public:
  Client(net::io_context& ioc, Run& run, std::size_t index, Tally& tally)
      : ioc_(ioc), run_(run), tally_(tally), next_(index), head_(request_head(run, index)) {}

  void start() { begin(); }

 private:
  static std::string request_head(const Run& run, std::size_t index) {
    const LoadOptions& o = run.options;
    std::string head = fmt::format("POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                                   o.path, run.target.host, run.target.port, o.content_type, o.body.size());
    if (!o.token.empty()) head += "Authorization: Bearer " + o.token + "\r\n";
    for (const auto& [name, value] : o.headers) head += name + ": " + value + "\r\n";
    if (!o.key_header.empty()) head += fmt::format("{}: client-{}\r\n", o.key_header, index);
    return head + "\r\n";
  }

  /// The next request, unless the run is over (then the client stops and its thread runs out of
  /// work); `move_on`: on a new connection to another address (the last one is draining).
  void begin(bool move_on = false) {
    if (run_.done) return;
    t0_ = Clock::now();
    tried_.clear();
    tries_ = 0;
    if (move_on) return connect(address_);
    if (!stream_) return connect({});
    if (alive()) return send();
    open(address_);  // the server closed it while idle: the same address again, not counted as a try
  }

  /// False when the server closed the idle connection (or sent something unasked).
  bool alive() {
    char byte = 0;
    const ssize_t n =
        ::recv(beast::get_lowest_layer(*stream_).socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  /// Connects to the next of the name's addresses (in sorted order, since DNS servers shuffle
  /// them), skipping `avoid` (the one that just failed) when there is another. When the name
  /// does not resolve at that moment (a DNS server busy with a node that just died), the
  /// addresses it had last time stand in: a hiccup of DNS does not make the client forget the
  /// replicas it knew. The lookup runs on the loop: a slow DNS server delays every client of
  /// the loop meanwhile (seen in the latencies, not as failures: a deadline that passed while
  /// the loop was held does not fire on an operation that completed).
  void connect(std::string avoid) {  // a copy: callers pass address_, which this reassigns
    auto addresses = resolve(run_.target.host);
    if (addresses.size() == 1 && addresses.front() == run_.target.host && !known_.empty()) addresses = known_;
    std::sort(addresses.begin(), addresses.end());
    known_ = addresses;
    addresses_ = addresses.size();
    address_ = addresses[next_++ % addresses.size()];
    if (address_ == avoid && addresses.size() > 1) address_ = addresses[next_++ % addresses.size()];
    open(address_);
  }

  /// A fresh connection to `address` (an IPv4 address, or the name when it did not resolve).
  void open(const std::string& address) {
    beast::error_code ec;
    const auto ip = net::ip::make_address(address, ec);
    if (ec) return retry(ec);
    if constexpr (kTls) {
      stream_ = std::make_unique<Stream>(ioc_, *run_.tls);
      beast::error_code not_ip;
      net::ip::make_address(run_.target.host, not_ip);
      if (not_ip) SSL_set_tlsext_host_name(stream_->native_handle(), run_.target.host.c_str());  // SNI: names only
    } else {
      stream_ = std::make_unique<Stream>(ioc_);
    }
    buffer_.clear();  // a new connection: nothing left from the last one
    auto& tcp_stream = beast::get_lowest_layer(*stream_);
    tcp_stream.expires_after(std::chrono::seconds(2));
    tcp_stream.async_connect(tcp::endpoint(ip, static_cast<unsigned short>(run_.target.port)),
                             [self = this->shared_from_this()](beast::error_code e) { self->on_connect(e); });
  }

  void on_connect(beast::error_code ec) {
    if (ec) return retry(ec);
    beast::error_code ignored;
    beast::get_lowest_layer(*stream_).socket().set_option(tcp::no_delay(true), ignored);  // no Nagle + delayed ACK
    if constexpr (kTls) {
      beast::get_lowest_layer(*stream_).expires_after(std::chrono::seconds(2));  // the handshake's own deadline
      stream_->async_handshake(ssl::stream_base::client, [self = this->shared_from_this()](beast::error_code e) {
        if (e) return self->retry(e);
        self->send();
      });
    } else {
      send();
    }
  }

  void send() {
    beast::get_lowest_layer(*stream_).expires_after(std::chrono::seconds(30));
    const std::array<net::const_buffer, 2> parts{net::buffer(head_), net::buffer(run_.options.body)};
    net::async_write(*stream_, parts, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->retry(ec);
      self->read();
    });
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(std::uint64_t{64} << 20);  // a reply is the server's word: bounded as a request is
    http::async_read(*stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->retry(ec);
      self->answered();
    });
  }

  /// Nothing came back from address_: the request again on a fresh connection, on each address
  /// once; then a failure. Posted, so that a run of failures does not recurse.
  void retry(beast::error_code ec) {
    tried_ += fmt::format("{}{} {}", tried_.empty() ? "" : ", ", address_, ec.message());
    stream_.reset();
    if (tries_++ < std::max<std::size_t>(1, addresses_)) {
      net::post(ioc_, [self = this->shared_from_this(), avoid = address_] { self->connect(avoid); });
      return;
    }
    ++run_.sent;
    if (++run_.failed <= 5) std::cerr << fmt::format("request failed: {}\n", tried_);
    net::post(ioc_, [self = this->shared_from_this()] { self->begin(); });
  }

  void answered() {
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0_).count();
    ++run_.sent;
    auto& reply = parser_->get();
    const bool keep = reply.keep_alive();  // false: the replica is draining (Connection: close)
    if (reply.result_int() != static_cast<unsigned>(run_.options.expect_status)) {
      if (++run_.failed <= 5) {
        std::cerr << fmt::format("request failed: {} {}\n", reply.result_int(), reply.body().substr(0, 200));
      }
    } else {
      ++tally_.answered[address_];
      if (run_.measuring) {
        tally_.latencies.push_back(ms);
        if (run_.options.per_second) {
          tally_.answered_at.push_back(std::chrono::duration<double>(Clock::now() - run_.measure_start).count());
        }
      }
    }
    if (keep) return begin();
    stream_.reset();
    net::post(ioc_, [self = this->shared_from_this()] { self->begin(true); });
  }

  net::io_context& ioc_;
  Run& run_;
  Tally& tally_;
  std::size_t next_;
  const std::string head_;          ///< the request's head; the body is the run's
  std::size_t addresses_ = 1;       ///< how many addresses the name had at the last connect
  std::size_t tries_ = 0;           ///< reconnections for this request
  std::vector<std::string> known_;  ///< the addresses of the last resolution
  std::string tried_;               ///< each address tried for this request and what went wrong there
  std::string address_;
  Clock::time_point t0_{};
  std::unique_ptr<Stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

/// `, "per_second": [{"second": 0, "requests": n, "p99_ms": x}, ...]`: each whole second's answers.
std::string per_second_json(const std::vector<Tally>& tallies) {
  std::map<long, std::vector<double>> by_second;
  for (const auto& t : tallies) {
    for (std::size_t i = 0; i < t.latencies.size() && i < t.answered_at.size(); ++i) {
      by_second[static_cast<long>(t.answered_at[i])].push_back(t.latencies[i]);
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
int report(const LoadOptions& options, const std::vector<Tally>& tallies, double elapsed, long sent, long failed) {
  std::vector<double> all;
  for (const auto& t : tallies) all.insert(all.end(), t.latencies.begin(), t.latencies.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0
                       : all[std::min(all.size() - 1, static_cast<std::size_t>(p * static_cast<double>(all.size())))];
  };
  std::map<std::string, long> by_address;
  for (const auto& t : tallies) {
    for (const auto& [address, n] : t.answered) by_address[address] += n;
  }
  std::string served;
  for (const auto& [address, n] : by_address)
    served += fmt::format(R"({}"{}": {})", served.empty() ? "" : ", ", address, n);
  std::cout << fmt::format(
                   R"({{"label": "{}", "clients": {}, "requests": {}, "requests_per_s": {:.1f}, "p50_ms": {:.2f}, )"
                   R"("p99_ms": {:.2f}, "sent": {}, "failed": {}, "answered_by": {{{}}}{}}})",
                   options.label, options.clients, all.size(), static_cast<double>(all.size()) / elapsed, pct(0.50),
                   pct(0.99), sent, failed, served, options.per_second ? per_second_json(tallies) : "")
            << std::endl;
  return all.empty() || failed > 0 ? 1 : 0;
}

}  // namespace

int run_load(const LoadOptions& options) {
  Run run{options, parse_url(options.url)};
  if (run.target.tls) {
    run.tls = std::make_unique<ssl::context>(ssl::context::tls_client);
    run.tls->set_verify_mode(ssl::verify_none);
  }
  // The clients, spread over `threads` event loops (each its own io_context: no locks between them).
  const std::size_t clients = static_cast<std::size_t>(std::max(1, options.clients));
  const std::size_t loops = std::clamp<std::size_t>(static_cast<std::size_t>(std::max(1, options.threads)), 1, clients);
  std::vector<Tally> tallies(clients);
  std::vector<std::unique_ptr<net::io_context>> contexts;
  for (std::size_t l = 0; l < loops; ++l) contexts.push_back(std::make_unique<net::io_context>(1));
  for (std::size_t c = 0; c < clients; ++c) {
    net::io_context& ioc = *contexts[c % loops];
    if (run.target.tls) {
      std::make_shared<Client<true>>(ioc, run, c, tallies[c])->start();
    } else {
      std::make_shared<Client<false>>(ioc, run, c, tallies[c])->start();
    }
  }
  std::vector<std::thread> threads;
  for (auto& ioc : contexts) threads.emplace_back([&ioc] { ioc->run(); });
  std::this_thread::sleep_for(options.warmup);
  run.measure_start = Clock::now();  // before `measuring` is set: the clients read it after
  run.measuring = true;
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(options.seconds);
  run.measuring = false;
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  run.done = true;  // each client stops after its request in flight; each loop then runs out of work
  for (auto& t : threads) t.join();
  return report(options, tallies, elapsed, run.sent.load(), run.failed.load());
}

}  // namespace mlswarm::cli_tool
