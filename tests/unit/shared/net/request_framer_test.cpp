// The server's request framer (Boost.Beast's parser, made strict) and the multipart splitter:
// bytes in, requests or errors out, no socket.

#include <gtest/gtest.h>

#include "request_framer.h"

namespace mlswarm {
namespace {

using Event = RequestFramer::Event;

/// Feeds `bytes` in reads of `piece` bytes until the framer reports something.
Event feed_until(RequestFramer& framer, std::string_view bytes, std::size_t piece, std::size_t& at) {
  while (true) {
    const Event event = framer.parse();
    if (event != Event::kNeedMore || at >= bytes.size()) return event;
    framer.feed(bytes.substr(at, piece));
    at += std::min(piece, bytes.size() - at);
  }
}

/// Every request of `bytes` (each admitted with `cap`), then the last event.
std::pair<std::vector<HttpRequest>, Event> frame(std::string_view bytes, std::size_t cap = 1 << 20,
                                                 std::size_t piece = 1 << 20) {
  RequestFramer framer(16u << 10);
  std::vector<HttpRequest> requests;
  std::size_t at = 0;
  while (true) {
    Event event = feed_until(framer, bytes, piece, at);
    if (event == Event::kHead) {
      framer.admit_body(cap);
      continue;
    }
    if (event == Event::kRequest) {
      requests.push_back(framer.take());
      continue;
    }
    return {requests, event};
  }
}

TEST(RequestFramer, ARequestSplitAnywhereComesOutTheSame) {
  const std::string bytes =
      "POST /jobs/a%20b?x=1&y=two+words&x=2 HTTP/1.1\r\nHost: h\r\nX-Thing: V\r\nContent-Length: 5\r\n\r\nhello";
  for (std::size_t piece : {1, 2, 7, 64, 4096}) {
    auto [requests, last] = frame(bytes, 100, piece);
    ASSERT_EQ(requests.size(), 1u) << piece;
    EXPECT_EQ(last, Event::kNeedMore);
    const HttpRequest& r = requests[0];
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.path, "/jobs/a b");
    EXPECT_EQ(r.target, "/jobs/a%20b?x=1&y=two+words&x=2");
    EXPECT_EQ(r.query.at("x"), "1");  // the first of a repeated key
    EXPECT_EQ(r.query.at("y"), "two words");
    EXPECT_EQ(r.header("x-thing"), "V");
    EXPECT_EQ(r.body, "hello");
  }
}

TEST(RequestFramer, PipelinedRequestsComeOutOneAtATimeInOrder) {
  auto [requests, last] =
      frame("GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /c HTTP/1.1\r\n\r\n");
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].path, "/a");
  EXPECT_EQ(requests[1].body, "ok");
  EXPECT_EQ(requests[2].path, "/c");
  EXPECT_EQ(last, Event::kNeedMore);
}

TEST(RequestFramer, AChunkedBodyIsJoinedAndCutOffAtItsCap) {
  auto [ok, ok_last] = frame("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0].body, "abcde");
  RequestFramer framer(16u << 10);
  framer.feed("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n9\r\n123456789\r\n0\r\n\r\n");
  ASSERT_EQ(framer.parse(), Event::kHead);
  framer.admit_body(10);
  EXPECT_EQ(framer.parse(), Event::kError);
  EXPECT_EQ(framer.error().code(), ErrorCode::kPayloadTooLarge);
}

// Duplicate and conflicting lengths, and codings other than chunked, would let a proxy in front
// and this server disagree on where a request ends (request smuggling). Issue 38: two
// Content-Length headers (2 and 100) were accepted, and Content-Length with chunked left the
// rest parsed as a second request.
TEST(RequestFramer, AmbiguousFramingIsA400) {
  const std::vector<std::string> heads = {
      "POST /t HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 100\r\n\r\nok",
      "POST /t HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
      "POST /t HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok",
      "POST /t HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
      "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
      "POST /t HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
      "POST /t HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
      "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /t HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
      "GET /t HTTP/1.1\r\nBad Header\r\n\r\n",
      "NOT A REQUEST\r\n\r\n",
  };
  for (const auto& head : heads) {
    auto [requests, last] = frame(head);
    EXPECT_TRUE(requests.empty()) << head;
    EXPECT_EQ(last, Event::kError) << head;
  }
}

TEST(RequestFramer, AHeadOverItsLimitIsA431) {
  RequestFramer framer(1024);
  framer.feed("GET / HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
  EXPECT_EQ(framer.parse(), Event::kError);
  EXPECT_EQ(framer.error().code(), ErrorCode::kHeadersTooLarge);
  RequestFramer unfinished(1024);
  unfinished.feed("GET / HTTP/1.1\r\nX-Big: " + std::string(2000, 'a'));
  EXPECT_EQ(unfinished.parse(), Event::kError) << "an unfinished head over the limit must not wait for more";
}

// boostorg/beast#2183: Beast 1.74 drops its body-limit error when the head and the body arrive
// in the same read, and #1770: a limit set after the head is ignored for a Content-Length body.
// The framer checks a Content-Length body against the cap itself: a handler never sees more.
TEST(RequestFramer, ABodyOverItsCapInTheSameReadAsItsHeadNeverComesOut) {
  RequestFramer framer(16u << 10);
  framer.feed("POST /t HTTP/1.1\r\nContent-Length: 40\r\n\r\n" + std::string(40, 'x'));
  ASSERT_EQ(framer.parse(), Event::kHead);
  EXPECT_EQ(framer.announced_body(), 40u);
  framer.admit_body(10);
  EXPECT_EQ(framer.parse(), Event::kError);
  EXPECT_EQ(framer.error().code(), ErrorCode::kPayloadTooLarge);
  // And a lying length: the bytes after it are the next request, framed as such.
  auto [requests, last] = frame("POST /t HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGARBAGE\r\n\r\n");
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].body, "ok");
  EXPECT_EQ(last, Event::kError);
}

TEST(RequestFramer, AHalfCloseAfterAWholeRequestStillYieldsIt) {
  RequestFramer framer(16u << 10);
  framer.feed("GET /healthz HTTP/1.1\r\n\r\n");
  framer.end_of_input();
  ASSERT_EQ(framer.parse(), Event::kHead);
  framer.admit_body(0);
  ASSERT_EQ(framer.parse(), Event::kRequest);
  EXPECT_EQ(framer.take().path, "/healthz");
  EXPECT_EQ(framer.parse(), Event::kClosed);
  RequestFramer cut(16u << 10);
  cut.feed("POST /t HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc");
  ASSERT_EQ(cut.parse(), Event::kHead);
  cut.admit_body(100);
  EXPECT_EQ(cut.parse(), Event::kNeedMore);
  cut.end_of_input();
  EXPECT_EQ(cut.parse(), Event::kError);
}

TEST(RequestFramer, ExpectContinueIsWantedOnlyBeforeAnyBody) {
  RequestFramer framer(16u << 10);
  framer.feed("POST /t HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
  ASSERT_EQ(framer.parse(), Event::kHead);
  EXPECT_TRUE(framer.wants_continue());
  framer.admit_body(3);
  framer.feed("abc");
  EXPECT_FALSE(framer.wants_continue());
  EXPECT_EQ(framer.parse(), Event::kRequest);
}

TEST(RequestFramer, ARefusedHeadWithoutABodyLetsTheConnectionGoOn) {
  RequestFramer framer(16u << 10);
  framer.feed("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
  ASSERT_EQ(framer.parse(), Event::kHead);
  EXPECT_TRUE(framer.skip_bodyless());
  ASSERT_EQ(framer.parse(), Event::kHead);
  EXPECT_EQ(framer.head().path, "/b");
  RequestFramer with_body(16u << 10);
  with_body.feed("POST /a HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n");
  ASSERT_EQ(with_body.parse(), Event::kHead);
  EXPECT_FALSE(with_body.skip_bodyless()) << "a refused body is never read: the connection must close";
}

TEST(Multipart, PartsComeOutWithTheirNamesAndBytes) {
  const std::string body =
      "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a \\\"b\\\".png\"\r\n"
      "Content-Type: image/png\r\n\r\n\x89PNG\r\n-XyZ\r\n--XyZ\r\ncontent-disposition: form-data; "
      "name=model_id\r\n\r\nfmnist\r\n--XyZ--\r\nepilogue";
  const auto parts =
      parse_multipart("multipart/form-data; boundary=\"XyZ\"", std::string_view(body.data(), body.size()));
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "image");
  EXPECT_EQ(parts[0].filename, "a \"b\".png");
  EXPECT_EQ(parts[0].content_type, "image/png");
  EXPECT_EQ(parts[0].content, "\x89PNG\r\n-XyZ");
  EXPECT_EQ(parts[1].name, "model_id");
  EXPECT_EQ(parts[1].content, "fmnist");
}

TEST(Multipart, BrokenBodiesAreRefused) {
  const std::string type = "multipart/form-data; boundary=B";
  for (const std::string body : {"", "--B\r\nContent-Disposition: form-data; name=a\r\n\r\nno end",
                                 "--B\r\nno colon\r\n\r\nx\r\n--B--", "--Bjunk", "no boundary at all"}) {
    EXPECT_THROW(parse_multipart(type, body), Error) << body;
  }
  EXPECT_THROW(parse_multipart("multipart/form-data", "--B--"), Error);
  std::string many;
  for (int i = 0; i < 70; ++i) many += "--B\r\n\r\nx\r\n";
  many += "--B--";
  EXPECT_THROW(parse_multipart(type, many, 64), Error);
}

TEST(DecodeUrl, PercentAndPlus) {
  EXPECT_EQ(decode_url("a%20b+c%2", false), "a b+c%2");
  EXPECT_EQ(decode_url("a%20b+c%zz", true), "a b c%zz");
}

}  // namespace
}  // namespace mlswarm
