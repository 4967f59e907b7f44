#include "mlswarm/auth.h"

#include <gtest/gtest.h>

#include <fstream>

#include "../../../support/error_code.h"
#include "../../../support/temp_dir.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

HttpRequest with_authorization(const std::string& value) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/train";
  if (!value.empty()) r.headers["authorization"] = value;
  return r;
}

ErrorCode code_of(const HttpRequest& r, const std::string& expected) {
  return testing::thrown_code([&] { require_token(r, expected, "API token"); });  // kInternal: accepted
}

TEST(TokensEqual, ComparesWholeStrings) {
  EXPECT_TRUE(tokens_equal("s3cret", "s3cret"));
  EXPECT_FALSE(tokens_equal("s3cret", "s3creT"));
  EXPECT_FALSE(tokens_equal("s3cret", "s3cre"));
  EXPECT_FALSE(tokens_equal("s3cre", "s3cret"));
  EXPECT_FALSE(tokens_equal("", "x"));
  EXPECT_TRUE(tokens_equal("", ""));
  // A shared prefix plus NULs must not look equal to the shorter string.
  EXPECT_FALSE(tokens_equal(std::string("ab\0", 3), "ab"));
}

TEST(BearerToken, ParsesTheSchemeCaseInsensitively) {
  EXPECT_EQ(bearer_token(with_authorization("Bearer abc")), "abc");
  EXPECT_EQ(bearer_token(with_authorization("bearer   abc  ")), "abc");
  EXPECT_EQ(bearer_token(with_authorization("Basic abc")), "");
  EXPECT_EQ(bearer_token(with_authorization("Bearer ")), "");
  EXPECT_EQ(bearer_token(with_authorization("")), "");
}

TEST(RequireToken, MissingIs401WrongIs403RightPasses) {
  EXPECT_EQ(code_of(with_authorization(""), "tok"), ErrorCode::kUnauthorized);
  EXPECT_EQ(code_of(with_authorization("Basic dG9r"), "tok"), ErrorCode::kUnauthorized);
  EXPECT_EQ(code_of(with_authorization("Bearer nope"), "tok"), ErrorCode::kForbidden);
  EXPECT_EQ(code_of(with_authorization("Bearer tok"), "tok"), ErrorCode::kInternal);
  EXPECT_EQ(code_of(with_authorization(""), ""), ErrorCode::kInternal) << "no token configured = open";
  EXPECT_EQ(http_status(ErrorCode::kForbidden), 403);
  EXPECT_EQ(HttpReply::error(Error(ErrorCode::kUnauthorized, "x")).headers.at("WWW-Authenticate"), "Bearer");
}

TEST(ReadTokenFile, TrimsTheNewlineAndRejectsBadFiles) {
  testing::TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
    return dir / name;
  };
  EXPECT_EQ(read_token_file(write("ok", "abc123\n"), "API_TOKEN_FILE"), "abc123");
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{{"empty", ""},
                                                                                   {"blank", " \n\n"},
                                                                                   {"inner", "ab c\n"},
                                                                                   {"control", std::string("ab\x01")},
                                                                                   {"big", std::string(5000, 'a')}}) {
    try {
      read_token_file(write(name, text), "API_TOKEN_FILE");
      ADD_FAILURE() << name << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.field(), "API_TOKEN_FILE") << name;
      if (!text.empty() && text.size() < 100) {
        EXPECT_EQ(std::string(e.what()).find(text), std::string::npos) << "the secret leaked into: " << e.what();
      }
    }
  }
  EXPECT_THROW(read_token_file(dir / "missing", "API_TOKEN_FILE"), Error);
}

}  // namespace
}  // namespace mlswarm
