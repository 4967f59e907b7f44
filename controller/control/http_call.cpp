#include "http_call.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>
#include <optional>
#include <sstream>
#include <string_view>
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

/// A reply as far as it has come in: whether it is complete, and what it says when it is.
/// Parsed here, by hand, from bytes the session counted itself: Boost.Beast 1.74's parser drops
/// its body-limit error when the header and the body arrive in one read (boostorg/beast#2183),
/// and its string body reserves whatever length the peer announces.
struct ParsedReply {
  enum class State { kIncomplete, kComplete, kInvalid } state = State::kIncomplete;
  int status = -1;
  std::string body;
  std::string error;
};

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
  return v;
}

/// A chunked body from `data`; kIncomplete until its last chunk has come.
ParsedReply dechunk(std::string_view data, std::size_t max_body) {
  ParsedReply out;
  std::size_t at = 0;
  while (true) {
    const std::size_t line_end = data.find("\r\n", at);
    if (line_end == std::string_view::npos) return out;
    const std::string_view size_text =
        trim(data.substr(at, data.find(';', at) < line_end ? data.find(';', at) - at : line_end - at));
    std::size_t size = 0;
    if (size_text.empty() || size_text.size() > 8) return {ParsedReply::State::kInvalid, -1, "", "bad chunk size"};
    for (char c : size_text) {
      const int digit = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                        : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
                                                                    : -1;
      if (digit < 0) return {ParsedReply::State::kInvalid, -1, "", "bad chunk size"};
      size = size * 16 + static_cast<std::size_t>(digit);
    }
    at = line_end + 2;
    if (size == 0) {
      out.state = ParsedReply::State::kComplete;  // trailers, if any, are not read
      return out;
    }
    if (out.body.size() + size > max_body) return {ParsedReply::State::kInvalid, -1, "", "too large"};
    if (data.size() < at + size + 2) return out;
    out.body.append(data.substr(at, size));
    at += size + 2;
  }
}

/// The status line and the framing headers of a reply's head (without the blank line).
struct ReplyHead {
  int status = -1;
  std::optional<std::size_t> length;
  bool chunked = false;
  std::string error;  ///< not empty: the head is not a usable HTTP reply head
};

ReplyHead parse_head(std::string_view head) {
  ReplyHead out;
  const std::size_t first_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, first_end);
  // "HTTP/1.x NNN reason"
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
      !std::isdigit(static_cast<unsigned char>(status_line[9])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[10])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[11]))) {
    out.error = "not an HTTP reply";
    return out;
  }
  out.status = (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
  for (std::size_t at = first_end == std::string_view::npos ? head.size() : first_end + 2; at < head.size();) {
    std::size_t end = head.find("\r\n", at);
    if (end == std::string_view::npos) end = head.size();
    const std::string_view line = head.substr(at, end - at);
    at = end + 2;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string name = lower(trim(line.substr(0, colon)));
    const std::string_view value = trim(line.substr(colon + 1));
    if (name == "content-length") {
      std::size_t n = 0;
      const bool digits = !value.empty() && value.size() <= 12 && std::all_of(value.begin(), value.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      });
      if (!digits) {
        out.error = "bad Content-Length";
        return out;
      }
      for (char c : value) n = n * 10 + static_cast<std::size_t>(c - '0');
      out.length = n;
    } else if (name == "transfer-encoding") {
      out.chunked = lower(value).find("chunked") != std::string::npos;
    }
  }
  return out;
}

/// Parses what has come so far. `closed`: the peer has closed, so a body without a length ends here.
ParsedReply parse_reply(std::string_view data, bool closed, std::size_t max_body) {
  const auto invalid = [](std::string why) {
    return ParsedReply{ParsedReply::State::kInvalid, -1, "", std::move(why)};
  };
  const std::size_t head_end = data.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (data.size() > kMaxHeaderBytes) return invalid("headers too large");
    if (closed) return invalid("closed before the headers ended");
    return {};
  }
  if (head_end > kMaxHeaderBytes) return invalid("headers too large");
  const ReplyHead head = parse_head(data.substr(0, head_end));
  if (!head.error.empty()) return invalid(head.error);
  const std::string_view body = data.substr(head_end + 4);
  if (head.chunked) {
    ParsedReply decoded = dechunk(body, max_body);
    decoded.status = head.status;
    if (decoded.state == ParsedReply::State::kIncomplete && closed) return invalid("closed inside a chunked body");
    return decoded;
  }
  if (head.length) {
    if (*head.length > max_body) return invalid("too large");
    if (body.size() < *head.length) return closed ? invalid("closed before the body ended") : ParsedReply{};
    return {ParsedReply::State::kComplete, head.status, std::string(body.substr(0, *head.length)), ""};
  }
  if (body.size() > max_body) return invalid("too large");
  if (!closed) return {};
  return {ParsedReply::State::kComplete, head.status, std::string(body), ""};
}

/// One call: connect, write, read, under one deadline for the whole exchange (a timer that
/// closes the socket, whatever the operation in flight), the reply's bytes counted here as they
/// arrive and capped at the header limit plus `max_reply_bytes`. The session is kept alive by
/// the handlers that hold it; `done` runs exactly once.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(asio::io_context& io, HttpCall call, const HttpCallLimits& limits, std::function<void(HttpCallResult)> done)
      : socket_(io), timer_(io), call_(std::move(call)), limits_(limits), done_(std::move(done)) {}

  void start() {
    started_ = std::chrono::steady_clock::now();
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
      asio::post(socket_.get_executor(),
                 [self = shared_from_this()] { self->fail("not an ip:port address: " + self->call_.address); });
      return;
    }
    http::request<http::string_body> request;
    request.method_string(call_.method);
    request.target(call_.target);
    request.version(11);
    request.set(http::field::host, call_.address);
    request.set(http::field::connection, "close");
    request.set(http::field::user_agent, "mlswarm-controller");
    for (const auto& [name, value] : call_.headers) request.set(name, value);
    if (!call_.body.empty()) request.set(http::field::content_type, "application/json");
    request.body() = std::move(call_.body);
    request.prepare_payload();
    std::ostringstream text;
    text << request;
    request_text_ = text.str();

    step_ = "connect";
    step_limit_ = std::min(limits_.connect_timeout, limits_.total_timeout);
    arm(started_ + step_limit_);
    socket_.async_connect(tcp::endpoint(ip, static_cast<unsigned short>(port)),
                          [self = shared_from_this()](boost::system::error_code e) { self->on_connect(e); });
  }

 private:
  void arm(std::chrono::steady_clock::time_point at) {
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code e) {
      if (e || self->finished_) return;  // cancelled: the step ended in time
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->socket_.close(ignored);  // every operation in flight ends with operation_aborted
    });
  }

  void on_connect(boost::system::error_code ec) {
    if (ec) return fail(describe(ec));
    step_ = "send";
    step_limit_ = limits_.total_timeout;
    arm(deadline());
    asio::async_write(socket_, asio::buffer(request_text_),
                      [self = shared_from_this()](boost::system::error_code e, std::size_t) {
                        if (e) return self->fail(self->describe(e));
                        self->step_ = "reply";
                        self->read();
                      });
  }

  void read() {
    socket_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](boost::system::error_code e,
                                                                              std::size_t n) { self->on_read(e, n); });
  }

  void on_read(boost::system::error_code ec, std::size_t n) {
    const bool closed = ec == asio::error::eof;
    if (ec && !closed) return fail(describe(ec));
    if (received_.size() + n > kMaxHeaderBytes + limits_.max_reply_bytes) {
      return fail(fmt::format("reply: larger than {} bytes", limits_.max_reply_bytes));
    }
    received_.append(chunk_.data(), n);
    ParsedReply reply = parse_reply(received_, closed, limits_.max_reply_bytes);
    switch (reply.state) {
      case ParsedReply::State::kIncomplete:
        if (closed) return fail("reply: closed before it ended");
        return read();
      case ParsedReply::State::kInvalid:
        if (reply.error == "too large" || reply.error == "headers too large") {
          return fail(fmt::format("reply: larger than {} bytes", limits_.max_reply_bytes));
        }
        return fail("reply: " + reply.error);
      case ParsedReply::State::kComplete: {
        HttpCallResult result;
        result.status = reply.status;
        result.body = std::move(reply.body);
        return finish(std::move(result));
      }
    }
  }

  std::chrono::steady_clock::time_point deadline() const { return started_ + limits_.total_timeout; }

  std::string describe(boost::system::error_code ec) const {
    if (timed_out_) return fmt::format("{}: no answer within {} ms", step_, step_limit_.count());
    return fmt::format("{}: {}", step_, ec.message());
  }

  void fail(std::string why) {
    HttpCallResult result;
    result.error = std::move(why);
    finish(std::move(result));
  }

  void finish(HttpCallResult result) {
    if (finished_) return;
    finished_ = true;
    timer_.cancel();
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    done_(std::move(result));
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  HttpCall call_;
  HttpCallLimits limits_;
  std::function<void(HttpCallResult)> done_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::string request_text_;
  std::array<char, 4096> chunk_{};
  std::string received_;
  const char* step_ = "connect";
  std::chrono::milliseconds step_limit_{0};
  bool timed_out_ = false;
  bool finished_ = false;
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
