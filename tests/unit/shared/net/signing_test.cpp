#include "mlswarm/signing.h"

#include <gtest/gtest.h>

#include "../../../support/error_code.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

TEST(Signing, Sha256AndHmacMatchKnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // RFC 4231 test case 2.
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(random_hex(16).size(), 32u);
  EXPECT_NE(random_hex(16), random_hex(16));
}

HttpRequest signed_request(const std::string& key, long long at, const std::string& host = "127.0.0.1:48516") {
  HttpRequest r;
  r.method = "DELETE";
  r.target = "/jobs/j1?attempt=2";
  r.path = "/jobs/j1";
  r.headers["host"] = host;
  for (auto& [k, v] : sign_request(key, r.method, r.target, host, "", at)) {
    std::string name = k;
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = v;
  }
  return r;
}

ErrorCode code_of(RequestVerifier& v, const HttpRequest& r, long long now) {
  return testing::thrown_code([&] { v.verify_head(r, now); });  // kInternal: accepted
}

TEST(Signing, AVerifierAcceptsEachSignedRequestOnceWithinTheWindow) {
  RequestVerifier v("k", std::chrono::seconds(30));
  const long long now = 1'800'000'000;
  HttpRequest r = signed_request("k", now);
  EXPECT_EQ(code_of(v, r, now + 20), ErrorCode::kInternal) << "accepted";
  EXPECT_EQ(code_of(v, r, now + 21), ErrorCode::kForbidden) << "replayed";
  EXPECT_EQ(code_of(v, signed_request("k", now), now + 31), ErrorCode::kForbidden) << "too old";
  EXPECT_EQ(code_of(v, signed_request("k", now + 40), now), ErrorCode::kForbidden) << "from the future";
  EXPECT_EQ(code_of(v, signed_request("other", now), now), ErrorCode::kForbidden) << "another key";
  HttpRequest moved = signed_request("k", now);
  moved.target = "/jobs/j1?attempt=3";
  EXPECT_EQ(code_of(v, moved, now), ErrorCode::kForbidden) << "the signature covers the query";
  EXPECT_EQ(code_of(v, HttpRequest{}, now), ErrorCode::kUnauthorized) << "unsigned";
}

TEST(Signing, NoncesAreForgottenOnlyAfterTheyCanNoLongerBeReplayed) {
  RequestVerifier v("k", std::chrono::seconds(30), 2);
  const long long now = 1'800'000'000;
  EXPECT_EQ(code_of(v, signed_request("k", now), now), ErrorCode::kInternal);
  EXPECT_EQ(code_of(v, signed_request("k", now), now), ErrorCode::kInternal);
  EXPECT_EQ(code_of(v, signed_request("k", now), now), ErrorCode::kTooManyRequests) << "bounded memory";
  EXPECT_EQ(code_of(v, signed_request("k", now + 61), now + 61), ErrorCode::kInternal) << "old nonces expired";
}

TEST(Signing, OnlyOwnAddressesAreOwn) {
  EXPECT_TRUE(is_own_address("127.0.0.1:48516"));
  EXPECT_TRUE(is_own_address("127.0.0.9"));
  EXPECT_FALSE(is_own_address("10.255.255.254:1"));
  EXPECT_FALSE(is_own_address("example.org:80"));
  EXPECT_FALSE(is_own_address(""));
}

}  // namespace
}  // namespace mlswarm
