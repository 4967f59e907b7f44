#include "http_call.h"

#include <memory>
#include <utility>  // Boost 1.74 Asio uses std::exchange without including it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

namespace mlswarm {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr std::size_t kMaxHeaderBytes = 16u << 10;

/// One call: connect, write, read, each step an async operation under the deadlines, the
/// session kept alive by the handlers that hold it.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(asio::io_context& io, HttpCall call, const HttpCallLimits& limits, std::function<void(HttpCallResult)> done)
      : stream_(io), buffer_(limits.max_reply_bytes + kMaxHeaderBytes), call_(std::move(call)), limits_(limits),
        done_(std::move(done)) {}

  void start() {
    deadline_ = std::chrono::steady_clock::now() + limits_.total_timeout;
    const auto colon = call_.address.rfind(':');
    boost::system::error_code ec;
    const auto ip = asio::ip::make_address_v4(call_.address.substr(0, colon == std::string::npos ? 0 : colon), ec);
    unsigned long port = 0;
    try {
      port = colon == std::string::npos ? 0 : std::stoul(call_.address.substr(colon + 1));
    } catch (const std::exception&) {
      port = 0;
    }
    if (ec || port == 0 || port > 65535) {
      asio::post(stream_.get_executor(), [self = shared_from_this()] {
        self->fail("not an ip:port address: " + self->call_.address);
      });
      return;
    }
    request_.method_string(call_.method);
    request_.target(call_.target);
    request_.version(11);
    request_.set(http::field::host, call_.address);
    request_.set(http::field::connection, "close");
    request_.set(http::field::user_agent, "mlswarm-controller");
    for (const auto& [name, value] : call_.headers) request_.set(name, value);
    if (!call_.body.empty()) request_.set(http::field::content_type, "application/json");
    request_.body() = std::move(call_.body);
    request_.prepare_payload();
    parser_.header_limit(kMaxHeaderBytes);
    parser_.body_limit(limits_.max_reply_bytes);
    stream_.expires_after(std::min(limits_.connect_timeout, limits_.total_timeout));
    stream_.async_connect(tcp::endpoint(ip, static_cast<unsigned short>(port)),
                          [self = shared_from_this()](beast::error_code e) { self->on_connect(e); });
  }

 private:
  void on_connect(beast::error_code ec) {
    if (ec) return fail(describe(ec, "connect", limits_.connect_timeout));
    stream_.expires_at(deadline_);
    http::async_write(stream_, request_, [self = shared_from_this()](beast::error_code e, std::size_t) {
      if (e) return self->fail(self->describe(e, "send", self->limits_.total_timeout));
      http::async_read(self->stream_, self->buffer_, self->parser_,
                       [self](beast::error_code e2, std::size_t) { self->on_read(e2); });
    });
  }

  void on_read(beast::error_code ec) {
    if (ec) return fail(describe(ec, "reply", limits_.total_timeout));
    HttpCallResult result;
    result.status = static_cast<int>(parser_.get().result_int());
    result.body = std::move(parser_.get().body());
    finish(std::move(result));
  }

  std::string describe(beast::error_code ec, const char* step, std::chrono::milliseconds limit) const {
    if (ec == beast::error::timeout) return fmt::format("{}: no answer within {} ms", step, limit.count());
    if (ec == http::error::body_limit || ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      return fmt::format("{}: larger than {} bytes", step, limits_.max_reply_bytes);
    }
    return fmt::format("{}: {}", step, ec.message());
  }

  void fail(std::string why) {
    HttpCallResult result;
    result.error = std::move(why);
    finish(std::move(result));
  }

  void finish(HttpCallResult result) {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    done_(std::move(result));
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  HttpCall call_;
  HttpCallLimits limits_;
  std::function<void(HttpCallResult)> done_;
  std::chrono::steady_clock::time_point deadline_;
  http::request<http::string_body> request_;
  http::response_parser<http::string_body> parser_;
};

}  // namespace

void async_http_call(asio::io_context& io, HttpCall call, const HttpCallLimits& limits,
                     std::function<void(HttpCallResult)> done) {
  std::make_shared<Session>(io, std::move(call), limits, std::move(done))->start();
}

HttpCallResult http_call(HttpCall call, const HttpCallLimits& limits) {
  asio::io_context io;
  HttpCallResult out;
  async_http_call(io, std::move(call), limits, [&out](HttpCallResult r) { out = std::move(r); });
  io.run();
  return out;
}

}  // namespace mlswarm
