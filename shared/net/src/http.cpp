#include "mlswarm/http.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace mlswarm {

std::string HttpRequest::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

std::optional<std::string> HttpRequest::query_param(const std::string& name) const {
  auto it = query.find(name);
  if (it == query.end()) return std::nullopt;
  return it->second;
}

HttpReply HttpReply::json(int status, const nlohmann::json& body) {
  HttpReply reply;
  reply.status = status;
  reply.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  reply.body += '\n';
  return reply;
}

HttpReply HttpReply::error(const Error& error) {
  HttpReply reply = json(http_status(error.code()), error_json(error));
  if (reply.status == 401) reply.headers["WWW-Authenticate"] = "Bearer";
  return reply;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.emplace_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

int json_nesting_depth(std::string_view text) noexcept {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

HttpReply HttpReply::json_text(std::string body) {
  HttpReply reply;
  reply.body = std::move(body);
  return reply;
}

void require_json_content(const HttpRequest& request) {
  const std::string type = request.header("content-type");
  if (!type.empty() && type.find("json") == std::string::npos &&
      type.find("x-www-form-urlencoded") == std::string::npos) {
    // curl -d sends form-urlencoded by default; we accept it as JSON text as the seed did.
    throw Error(ErrorCode::kUnsupportedMediaType,
                fmt::format("Content-Type '{}' is not supported; send application/json", type));
  }
  if (request.body.empty()) throw Error(ErrorCode::kInvalidArgument, "the request body is empty");
}

nlohmann::json parse_json_body(const HttpRequest& request, std::size_t max_values) {
  require_json_content(request);
  return parse_json_bounded(request.body, max_values);
}

namespace {

/// A SAX pass that only counts values, and stops past `limit`.
struct ValueCounter {
  std::size_t limit;
  std::size_t values = 0;
  bool over = false;
  std::size_t error_at = 0;

  bool value() {
    over = ++values > limit;
    return !over;
  }
  bool null() { return value(); }
  bool boolean(bool) { return value(); }
  bool number_integer(nlohmann::json::number_integer_t) { return value(); }
  bool number_unsigned(nlohmann::json::number_unsigned_t) { return value(); }
  bool number_float(nlohmann::json::number_float_t, const std::string&) { return value(); }
  bool string(std::string&) { return value(); }
  bool binary(nlohmann::json::binary_t&) { return value(); }
  bool start_object(std::size_t) { return true; }
  bool key(std::string&) { return true; }
  bool end_object() { return true; }
  bool start_array(std::size_t) { return true; }
  bool end_array() { return true; }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) {
    error_at = position;
    return false;
  }
};

}  // namespace

nlohmann::json parse_json_bounded(std::string_view text, std::size_t max_values) {
  // Every reader of a parsed body recurses over it; no request of ours nests beyond 6.
  if (json_nesting_depth(text) > kMaxJsonDepth) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("JSON nested deeper than {} levels", kMaxJsonDepth));
  }
  if (max_values != SIZE_MAX) {
    // Counted first, without building anything: a parsed tree costs ~16 bytes and more a value.
    ValueCounter counter{max_values};
    const bool whole = nlohmann::json::sax_parse(text, &counter, nlohmann::json::input_format_t::json, false);
    if (counter.over) {
      throw Error(ErrorCode::kPayloadTooLarge, fmt::format("the body holds more than {} values", max_values));
    }
    if (!whole) throw Error(ErrorCode::kInvalidArgument, fmt::format("malformed JSON at byte {}", counter.error_at));
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("malformed JSON at byte {}", e.byte));
  } catch (const nlohmann::json::exception&) {
    // Found by fuzz_job_spec: a number too large for a double throws out_of_range, not
    // parse_error, and became a 500.
    throw Error(ErrorCode::kInvalidArgument, "malformed JSON: a number is out of range");
  }
}

HttpReply reply_for_exception(const HttpRequest& request, std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return HttpReply::error(e);
  } catch (const std::bad_alloc&) {
    spdlog::error("{} {}: out of memory", request.method, request.path);
    return HttpReply::error(Error(ErrorCode::kPayloadTooLarge, "the request needs more memory than allowed"));
  } catch (const std::exception& e) {
    spdlog::error("{} {}: unexpected error: {}", request.method, request.path, e.what());
  } catch (...) {
    spdlog::error("{} {}: unexpected non-standard exception", request.method, request.path);
  }
  return HttpReply::error(Error(ErrorCode::kInternal, "internal error; see the server log"));
}

}  // namespace mlswarm
