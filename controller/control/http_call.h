#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace mlswarm {

/// One HTTP/1.1 request from the controller to a peer at "ip:port" (a trainer, or a host
/// that claims to be one).
struct HttpCall {
  std::string method = "GET";
  std::string address;  ///< "ip:port"
  std::string target;   ///< path and query
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  ///< sent with Content-Type: application/json when not empty
};

/// What a peer's reply may cost: a connect deadline, one deadline for the whole exchange
/// (connect, write and read together: a peer that trickles a byte at a time still ends at
/// it), and a cap on the reply's size (status line, headers and body).
struct HttpCallLimits {
  std::chrono::milliseconds connect_timeout{300};
  std::chrono::milliseconds total_timeout{3000};
  std::size_t max_reply_bytes = 1u << 20;
};

/// The outcome: the HTTP status and body, or status -1 and why nothing usable came back
/// (refused, timed out, too large, not HTTP).
struct HttpCallResult {
  int status = -1;
  std::string body;
  std::string error;
};

/// Starts `call` on `io` (Boost.Beast, one connection, Connection: close); `done` runs on
/// the thread that runs `io`, exactly once.
void async_http_call(boost::asio::io_context& io, HttpCall call, const HttpCallLimits& limits,
                     std::function<void(HttpCallResult)> done);

/// The same on a private io_context: blocks until the reply or a deadline. Thread-safe.
HttpCallResult http_call(HttpCall call, const HttpCallLimits& limits);

}  // namespace mlswarm
