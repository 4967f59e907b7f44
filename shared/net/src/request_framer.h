#pragma once

// Internal to the shared library (and the HTTP fuzz target): HTTP/1.1 requests out of the bytes
// of one connection, with no socket, on Boost.Beast's parser. HttpServer's sessions read into
// it; the fuzz target feeds it raw input.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "mlswarm/error.h"
#include "mlswarm/http.h"

namespace mlswarm {

/// Turns the bytes of one connection into requests, one at a time, strictly:
///
/// - the head (request line and headers) may be at most `max_head_bytes`, else 431;
/// - a duplicate Content-Length (even with the same value), Content-Length beside
///   Transfer-Encoding, and any Transfer-Encoding but a single `chunked` are 400s: a proxy in
///   front and this server must never disagree on where a request ends;
/// - the body is read only after admit_body(cap): a Content-Length over the cap is the
///   caller's to refuse (admission does), a chunked body is cut off at the cap (413).
///
/// Beast 1.74 checks a Content-Length against the body limit only while the head is parsed
/// (so a limit set after the head is ignored for it, boostorg/beast#1770), drops the limit's
/// error when the body comes in the same read as the head (boostorg/beast#2183), and takes an
/// empty limit for a limit of zero (#2070). None of them can reach a handler here: the limit is
/// the largest number while the head is parsed, the cap is checked against Content-Length by
/// admission and again on the complete body (the framer's own check), and only chunked bodies
/// use Beast's limit, which it applies per chunk.
///
/// A multipart/form-data body is split into HttpRequest::files (its `body` left empty).
/// Not thread-safe: one connection's.
class RequestFramer {
 public:
  enum class Event {
    kNeedMore,  ///< feed more bytes
    kHead,      ///< head() is complete: call admit_body() or stop
    kRequest,   ///< take() the complete request
    kError,     ///< error() says why; the connection must close after answering it
    kClosed,    ///< the client closed its side between requests: nothing to answer
  };

  explicit RequestFramer(std::size_t max_head_bytes);

  /// Appends bytes read from the connection.
  void feed(std::string_view bytes);
  /// Parses what has been fed. After kHead, call admit_body() before parsing again; after
  /// kRequest, take() the request, and the next parse() starts on the next one.
  Event parse();
  /// The request so far: line and headers (after kHead), body too (after kRequest).
  const HttpRequest& head() const { return request_; }
  /// The body may be up to `cap` bytes; reading it goes on at the next parse().
  void admit_body(std::size_t cap);
  /// The complete request (after kRequest); the framer moves on to the next.
  HttpRequest take();
  /// Abandons the current request after kHead without reading its body. True when it
  /// announced none, so that the connection can go on with the next request; false when its
  /// body would have to be read (or skipped) first: the connection must close.
  bool skip_bodyless();
  /// Why the last parse() returned kError: a 400, 413 or 431 Error.
  const Error& error() const { return *error_; }

  /// True once the head of the current request has started to arrive (any byte).
  bool started() const { return !buffer_.empty() || head_done_; }
  /// True when the head asked for "Expect: 100-continue" and none of its body has arrived.
  bool wants_continue() const;
  /// Bytes of the current request's body announced by Content-Length (0 for chunked).
  std::size_t announced_body() const;
  bool chunked() const;
  /// Bytes held: unparsed input and the body read so far.
  std::size_t held() const;
  /// The client closed its side: a request in progress is cut short (kError on parse()).
  void end_of_input() { eof_ = true; }
  bool ended() const { return eof_; }

 private:
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;
  void reset();
  Event fail(ErrorCode code, std::string message);
  Event finish_head();
  Event finish_request();

  std::size_t max_head_bytes_;
  std::string buffer_;  ///< fed and not yet parsed
  std::optional<Parser> parser_;
  HttpRequest request_;
  std::size_t cap_ = 0;
  bool head_done_ = false;
  bool admitted_ = false;
  bool eof_ = false;
  std::optional<Error> error_;
};

/// Splits a multipart/form-data body (RFC 7578) into its parts. Throws Error(kInvalidArgument)
/// for a body that is not one: no boundary, a part without its headers' end, no closing
/// boundary, more than `max_parts` parts or part headers over 8 KiB.
std::vector<UploadedFile> parse_multipart(std::string_view content_type, std::string_view body,
                                          std::size_t max_parts = 64);

/// Percent-decodes a request path (`plus_is_space` false) or a query key or value (true).
std::string decode_url(std::string_view text, bool plus_is_space);

}  // namespace mlswarm
