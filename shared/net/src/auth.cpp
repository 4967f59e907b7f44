#include "mlswarm/auth.h"

#include <chrono>
#include <map>
#include <mutex>

#include <cctype>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/log.h"

namespace mlswarm {

std::string read_token_file(const std::filesystem::path& path, std::string_view what) {
  std::string text;
  try {
    text = read_file(path, 4096);
  } catch (const Error& e) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: {}", what, e.what()), std::string(what));
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  if (text.empty()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: {} is empty", what, path.string()), std::string(what));
  }
  for (unsigned char c : text) {
    if (c <= 0x20 || c == 0x7f) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: {} holds whitespace or control characters inside the token", what, path.string()),
                  std::string(what));
    }
  }
  return text;
}

bool tokens_equal(std::string_view a, std::string_view b) noexcept {
  const std::size_t n = std::max(a.size(), b.size());
  // Every byte position up to the longer length is visited; a length mismatch counts too.
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = static_cast<unsigned char>(diff | (x ^ y));
  }
  return diff == 0;
}

std::string bearer_token(const HttpRequest& request) {
  const std::string value = request.header("authorization");
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size()) return {};
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(value[i])) != kScheme[i]) return {};
  }
  std::size_t start = value.find_first_not_of(' ', kScheme.size());
  if (start == std::string::npos) return {};
  std::size_t end = value.find_last_not_of(' ');
  return value.substr(start, end - start + 1);
}

void require_token(const HttpRequest& request, const std::string& expected, std::string_view realm) {
  if (expected.empty()) return;
  const std::string token = bearer_token(request);
  if (token.empty()) {
    throw Error(ErrorCode::kUnauthorized,
                fmt::format("{} requires a bearer token: send 'Authorization: Bearer <{}>'", request.path, realm));
  }
  if (!tokens_equal(token, expected)) {
    // A wrong credential is worth an operator's attention (a missing one is routine: probes,
    // a first curl); the token itself is never logged.
    // At most one line every 10 s per realm, with the count since the last (9,000 wrong tokens
    // wrote 9,024 lines before).
    static std::mutex mutex;
    static std::map<std::string, long, std::less<>> refused_since_line;
    long refused = 0;
    {
      std::lock_guard lock(mutex);
      refused = ++refused_since_line[std::string(realm)];
      if (log_allowed(fmt::format("wrong token {}", realm), std::chrono::seconds(10))) {
        refused_since_line[std::string(realm)] = 0;
      } else {
        refused = 0;
      }
    }
    if (refused > 0) {
      spdlog::warn("{} {} from {} refused: the bearer token is not the {}{}", request.method, request.path,
                   request.remote_addr.empty() ? "?" : request.remote_addr, realm,
                   refused > 1 ? fmt::format(" ({} refused so since the last such line)", refused) : std::string());
    }
    throw Error(ErrorCode::kForbidden, fmt::format("the bearer token is not the {}", realm));
  }
}

}  // namespace mlswarm
