#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlswarm/error.h"

namespace mlswarm {

/// One part of a multipart/form-data upload.
struct UploadedFile {
  std::string name;  ///< the form field
  std::string filename;
  std::string content_type;
  std::string content;
};

/// A request as route handlers see it: no socket, so handlers are plain functions that
/// tests call directly. Header names are lower-case.
struct HttpRequest {
  std::string method;  ///< "GET", "POST", ...
  std::string path;    ///< without the query string
  std::string target;  ///< the request target as sent: path and query, still percent-encoded
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;
  std::string body;
  std::vector<UploadedFile> files;  ///< multipart/form-data parts
  std::string remote_addr;
  std::string local_addr;  ///< "ip:port" the connection arrived on (what the client dialed)
  std::string request_id;  ///< set by HttpServer; also the X-Request-Id reply header

  std::string header(const std::string& lower_name) const;
  std::optional<std::string> query_param(const std::string& name) const;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;

  static HttpReply json(int status, const nlohmann::json& body);
  /// A 200 whose body is JSON text the caller wrote (it ends in a newline, as json()'s do).
  static HttpReply json_text(std::string body);
  static HttpReply error(const Error& error);
};

/// Splits "/jobs/abc" into {"jobs", "abc"}; empty segments are dropped.
std::vector<std::string> split_path(std::string_view path);

/// The deepest nesting of arrays and objects in JSON text (strings skipped), without parsing.
int json_nesting_depth(std::string_view text) noexcept;
inline constexpr int kMaxJsonDepth = 32;

/// Parses a JSON request body. Throws Error(kInvalidArgument) with the parser's position
/// for malformed JSON or nesting deeper than kMaxJsonDepth, Error(kUnsupportedMediaType) when a
/// Content-Type other than JSON was sent, and Error(kPayloadTooLarge) as soon as the body holds
/// more than `max_values` values (numbers, strings, ...): counted while parsing, so that a body
/// of millions of tiny numbers costs its limit, not the ~16 bytes a number a parsed tree takes.
nlohmann::json parse_json_body(const HttpRequest& request, std::size_t max_values = SIZE_MAX);
/// parse_json_body's parse of `text` alone (no Content-Type check): the same errors.
nlohmann::json parse_json_bounded(std::string_view text, std::size_t max_values);
/// parse_json_body's first checks: Error(kUnsupportedMediaType) for a Content-Type other than
/// JSON (or curl's default form type), Error(kInvalidArgument) for an empty body.
void require_json_content(const HttpRequest& request);

/// Runs a handler and maps anything it throws to a JSON error reply: mlswarm::Error to its
/// status, anything else to a 500 with no internals in the body (the text goes to the log).
template <typename Handler>
HttpReply guarded(Handler&& handler, const HttpRequest& request);

HttpReply reply_for_exception(const HttpRequest& request, std::exception_ptr error);

template <typename Handler>
HttpReply guarded(Handler&& handler, const HttpRequest& request) {
  try {
    return handler(request);
  } catch (...) {
    return reply_for_exception(request, std::current_exception());
  }
}

}  // namespace mlswarm
