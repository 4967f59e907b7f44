#include "request_framer.h"

#include <string.h>  // memmem: linear time, where a naive search of a boundary is not

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>

#include <boost/beast/http/error.hpp>
#include <fmt/format.h>

namespace mlswarm {
namespace http = boost::beast::http;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// "a=1&b=x+y" into `query` (the first of a repeated key wins, as before).
void parse_query(std::string_view text, std::map<std::string, std::string>& query) {
  while (!text.empty()) {
    const std::size_t amp = text.find('&');
    const std::string_view piece = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
    const std::size_t eq = piece.find('=');
    const std::string_view key = piece.substr(0, eq);
    if (key.empty()) continue;
    query.emplace(decode_url(key, true),
                  decode_url(eq == std::string_view::npos ? std::string_view() : piece.substr(eq + 1), true));
  }
}

/// The value of parameter `name` in "form-data; name=\"x\"; filename=x.png" (quoted or not).
std::optional<std::string> header_param(std::string_view value, std::string_view name) {
  std::size_t at = value.find(';');
  while (at != std::string_view::npos) {
    std::string_view rest = trim(value.substr(at + 1));
    const std::size_t eq = rest.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const bool wanted = lower(trim(rest.substr(0, eq))) == name;
    rest = trim(rest.substr(eq + 1));
    std::string out;
    std::size_t used = 0;
    if (!rest.empty() && rest.front() == '"') {
      for (used = 1; used < rest.size() && rest[used] != '"'; ++used) {
        if (rest[used] == '\\' && used + 1 < rest.size()) ++used;
        out += rest[used];
      }
      if (used >= rest.size()) return std::nullopt;  // unterminated
      ++used;
    } else {
      used = std::min(rest.find(';'), rest.size());
      out = std::string(trim(rest.substr(0, used)));
    }
    if (wanted) return out;
    const std::size_t next = rest.find(';', used);
    at = next == std::string_view::npos ? next : value.size() - rest.size() + next;
  }
  return std::nullopt;
}

Error bad_multipart(const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, "malformed multipart/form-data body: " + why);
}

/// A part's headers (lines without their final CRLF) into its name, file name and type.
UploadedFile parse_part_headers(std::string_view headers) {
  UploadedFile part;
  while (!headers.empty()) {
    const std::size_t end = headers.find("\r\n");
    const std::string_view line = headers.substr(0, end);
    headers = end == std::string_view::npos ? std::string_view() : headers.substr(end + 2);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) throw bad_multipart("a part header without ':'");
    const std::string name = lower(trim(line.substr(0, colon)));
    const std::string_view value = trim(line.substr(colon + 1));
    if (name == "content-disposition") {
      part.name = header_param(value, "name").value_or("");
      part.filename = header_param(value, "filename").value_or("");
    } else if (name == "content-type") {
      part.content_type = std::string(value);
    }
  }
  return part;
}

std::size_t find_in(std::string_view haystack, std::string_view needle, std::size_t from) {
  if (from > haystack.size()) return std::string_view::npos;
  const void* hit = ::memmem(haystack.data() + from, haystack.size() - from, needle.data(), needle.size());
  return hit == nullptr ? std::string_view::npos : static_cast<const char*>(hit) - haystack.data();
}

}  // namespace

std::string decode_url(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%' && i + 2 < text.size() && hex_digit(text[i + 1]) >= 0 && hex_digit(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(text[i + 1]) * 16 + hex_digit(text[i + 2]));
      i += 2;
    } else {
      out += plus_is_space && c == '+' ? ' ' : c;
    }
  }
  return out;
}

std::vector<UploadedFile> parse_multipart(std::string_view content_type, std::string_view body, std::size_t max_parts) {
  const std::string boundary = header_param(content_type, "boundary").value_or("");
  if (boundary.empty() || boundary.size() > 200) throw bad_multipart("no boundary in its Content-Type");
  const std::string delimiter = "--" + boundary;
  const std::string next = "\r\n" + delimiter;
  std::size_t at = 0;
  if (body.substr(0, delimiter.size()) == delimiter) {
    at = delimiter.size();
  } else {
    const std::size_t first = find_in(body, next, 0);
    if (first == std::string_view::npos) throw bad_multipart("no boundary");
    at = first + next.size();
  }
  std::vector<UploadedFile> parts;
  while (true) {
    if (body.substr(at, 2) == "--") return parts;
    while (at < body.size() && (body[at] == ' ' || body[at] == '\t')) ++at;
    if (body.substr(at, 2) != "\r\n") throw bad_multipart("a boundary not followed by a line end");
    at += 2;
    if (parts.size() == max_parts) throw bad_multipart(fmt::format("more than {} parts", max_parts));
    std::size_t headers_end = 0;
    std::size_t content_start = 0;
    if (body.substr(at, 2) == "\r\n") {
      headers_end = at;
      content_start = at + 2;
    } else {
      headers_end = find_in(body.substr(0, std::min(body.size(), at + (8u << 10) + 4)), "\r\n\r\n", at);
      if (headers_end == std::string_view::npos) throw bad_multipart("a part's headers do not end (or exceed 8 KiB)");
      content_start = headers_end + 4;
    }
    UploadedFile part = parse_part_headers(body.substr(at, headers_end - at));
    const std::size_t end = find_in(body, next, content_start);
    if (end == std::string_view::npos) throw bad_multipart("no closing boundary");
    part.content = std::string(body.substr(content_start, end - content_start));
    parts.push_back(std::move(part));
    at = end + next.size();
  }
}

RequestFramer::RequestFramer(std::size_t max_head_bytes) : max_head_bytes_(max_head_bytes) { reset(); }

void RequestFramer::reset() {
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(max_head_bytes_, UINT32_MAX)));
  // No limit while the head is parsed: the cap comes with admit_body() (see the class
  // comment). Not boost::none: 1.74 compares a Content-Length with an empty limit as over it
  // (boostorg/beast#2070, fixed in 1.75).
  parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
  parser_->eager(false);
  request_ = HttpRequest{};
  cap_ = 0;
  head_done_ = false;
  admitted_ = false;
  error_.reset();
}

void RequestFramer::feed(std::string_view bytes) { buffer_.append(bytes); }

RequestFramer::Event RequestFramer::fail(ErrorCode code, std::string message) {
  error_ = Error(code, std::move(message));
  return Event::kError;
}

RequestFramer::Event RequestFramer::parse() {
  if (error_) return Event::kError;
  if (head_done_ && !admitted_) return Event::kHead;
  while (!parser_->is_done()) {
    boost::beast::error_code ec;
    const std::size_t used = buffer_.empty() ? 0 : parser_->put(boost::asio::buffer(buffer_), ec);
    buffer_.erase(0, used);
    if (buffer_.empty() && !ec && !parser_->is_done()) ec = http::error::need_more;
    if ((!ec || ec == http::error::need_more) && parser_->is_header_done() && !head_done_) {
      return finish_head();  // the head first, whether or not its body has come
    }
    if (ec == http::error::need_more) {
      if (!eof_) return Event::kNeedMore;
      if (!parser_->got_some()) return Event::kClosed;
      return fail(ErrorCode::kInvalidArgument, "the request was cut short");
    }
    if (ec == http::error::header_limit) {
      return fail(ErrorCode::kHeadersTooLarge, fmt::format("the request head exceeds {} bytes", max_head_bytes_));
    }
    if (ec == http::error::body_limit) {
      return fail(ErrorCode::kPayloadTooLarge, fmt::format("the request body exceeds {} bytes", cap_));
    }
    if (ec) return fail(ErrorCode::kInvalidArgument, "malformed request: " + ec.message());
  }
  return finish_request();
}

RequestFramer::Event RequestFramer::finish_head() {
  head_done_ = true;
  const auto& message = parser_->get();
  int lengths = 0;
  int codings = 0;
  for (const auto& field : message) {
    if (field.name() == http::field::content_length) {
      ++lengths;
      if (field.value().find(',') != boost::beast::string_view::npos) ++lengths;
    }
    if (field.name() == http::field::transfer_encoding) {
      ++codings;
      if (lower(trim(std::string_view(field.value().data(), field.value().size()))) != "chunked") ++codings;
    }
  }
  if (lengths > 1) return fail(ErrorCode::kInvalidArgument, "more than one Content-Length");
  if (lengths > 0 && codings > 0) return fail(ErrorCode::kInvalidArgument, "Content-Length with Transfer-Encoding");
  if (codings > 1) return fail(ErrorCode::kInvalidArgument, "a Transfer-Encoding other than one 'chunked'");
  request_.method = std::string(message.method_string());
  request_.target = std::string(message.target());
  const std::size_t question = request_.target.find('?');
  request_.path = decode_url(std::string_view(request_.target).substr(0, question), false);
  if (question != std::string::npos)
    parse_query(std::string_view(request_.target).substr(question + 1), request_.query);
  for (const auto& field : message) {
    request_.headers.emplace(lower(std::string_view(field.name_string().data(), field.name_string().size())),
                             std::string(field.value()));
  }
  return Event::kHead;
}

void RequestFramer::admit_body(std::size_t cap) {
  cap_ = cap;
  admitted_ = true;
  parser_->body_limit(static_cast<std::uint64_t>(cap));  // applied per chunk to a chunked body
  parser_->eager(true);
}

RequestFramer::Event RequestFramer::finish_request() {
  std::string& body = parser_->get().body();
  if (body.size() > cap_ && admitted_) {
    return fail(ErrorCode::kPayloadTooLarge, fmt::format("the request body exceeds {} bytes", cap_));
  }
  request_.body = std::move(body);
  return Event::kRequest;
}

HttpRequest RequestFramer::take() {
  HttpRequest out = std::move(request_);
  reset();
  return out;
}

bool RequestFramer::skip_bodyless() {
  if (!head_done_ || error_ || chunked() || announced_body() > 0) return false;
  reset();
  return true;
}

bool RequestFramer::wants_continue() const {
  if (!head_done_ || !buffer_.empty() || parser_->get().version() < 11) return false;
  if (announced_body() == 0 && !chunked()) return false;
  return lower(std::string_view(request_.header("expect"))) == "100-continue";
}

std::size_t RequestFramer::announced_body() const {
  if (!head_done_ || !parser_->content_length()) return 0;
  return static_cast<std::size_t>(*parser_->content_length());
}

bool RequestFramer::chunked() const { return head_done_ && parser_->chunked(); }

std::size_t RequestFramer::held() const {
  if (!admitted_) return buffer_.size();
  return buffer_.size() + (chunked() ? parser_->get().body().size() : announced_body());
}

}  // namespace mlswarm
