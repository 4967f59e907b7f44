#include "mlswarm/signing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdlib>

#include <fmt/format.h>

#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/ipv4.h"

namespace mlswarm {
namespace {

std::string hex(const unsigned char* data, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 15];
  }
  return out;
}

std::string string_to_sign(std::string_view method, std::string_view target, std::string_view host,
                           std::string_view date, std::string_view nonce, std::string_view content_sha256) {
  return fmt::format("mlswarm-v1\n{}\n{}\n{}\n{}\n{}\n{}", method, target, host, date, nonce, content_sha256);
}

/// The request target as it was signed: the path with its query string, as sent.
const std::string& target_of(const HttpRequest& request) {
  return request.target.empty() ? request.path : request.target;
}

bool is_lower_hex(std::string_view text, std::size_t length) {
  if (text.size() != length) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw Error(ErrorCode::kInternal, "SHA-256 failed");
  }
  return hex(digest, length);
}

std::string hmac_sha256_hex(std::string_view key, std::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length) == nullptr) {
    throw Error(ErrorCode::kInternal, "HMAC-SHA256 failed");
  }
  return hex(digest, length);
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    throw Error(ErrorCode::kInternal, "no random bytes from OpenSSL");
  }
  return hex(reinterpret_cast<const unsigned char*>(raw.data()), bytes);
}

std::vector<std::pair<std::string, std::string>> sign_request(std::string_view key, std::string_view method,
                                                              std::string_view target, std::string_view host,
                                                              std::string_view body, long long unix_seconds) {
  const std::string date = std::to_string(unix_seconds);
  const std::string nonce = random_hex(16);
  const std::string content = sha256_hex(body);
  return {{kDateHeader, date},
          {kNonceHeader, nonce},
          {kContentHashHeader, content},
          {kSignatureHeader, hmac_sha256_hex(key, string_to_sign(method, target, host, date, nonce, content))}};
}

std::string challenge_proof(std::string_view key, std::string_view challenge, std::string_view host) {
  return hmac_sha256_hex(key, fmt::format("mlswarm-challenge-v1\n{}\n{}", challenge, host));
}

bool is_own_address(std::string_view host) {
  const std::string ip(host.substr(0, host.rfind(':') == std::string_view::npos ? host.size() : host.rfind(':')));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  std::uint32_t parsed = 0;
  if (!parse_ipv4(ip, parsed)) return false;
  address.sin_addr.s_addr = htonl(parsed);
  // Only this machine's addresses can be bound; no packet is sent.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool own = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return own;
}

bool is_dialed_address(std::string_view host, std::string_view local) {
  // The connection's own local end is what the caller dialed; a relay on another address of
  // the same machine opens a connection of its own, whose local end is this trainer's address.
  if (!local.empty()) return host == local;
  return is_own_address(host);
}

RequestVerifier::RequestVerifier(std::string key, std::chrono::seconds window, std::size_t max_nonces,
                                 std::string advertised)
    : key_(std::move(key)), advertised_(std::move(advertised)), window_(window), max_nonces_(max_nonces) {}

bool RequestVerifier::dialed(std::string_view host, std::string_view local) const {
  return (!advertised_.empty() && host == advertised_) || is_dialed_address(host, local);
}

void RequestVerifier::verify_head(const HttpRequest& request, long long now) {
  if (key_.empty()) return;
  const std::string date = request.header("x-mlswarm-date");
  const std::string nonce = request.header("x-mlswarm-nonce");
  const std::string content = request.header("x-mlswarm-content-sha256");
  const std::string signature = request.header("x-mlswarm-signature");
  if (date.empty() || nonce.empty() || content.empty() || signature.empty()) {
    throw Error(ErrorCode::kUnauthorized,
                fmt::format("{} {} needs a request signed with the cluster key (only the controller sends those)",
                            request.method, request.path));
  }
  char* end = nullptr;
  const long long signed_at = std::strtoll(date.c_str(), &end, 10);
  if (end == date.c_str() || *end != '\0' || signed_at < now - window_.count() || signed_at > now + window_.count()) {
    throw Error(ErrorCode::kForbidden, fmt::format("the request's signature date is not within {} s of this "
                                                   "trainer's clock (check NTP on both nodes)",
                                                   window_.count()));
  }
  const std::string host = request.header("host");
  const std::string expected =
      hmac_sha256_hex(key_, string_to_sign(request.method, target_of(request), host, date, nonce, content));
  if (!is_lower_hex(nonce, 32) || !is_lower_hex(content, 64) || !tokens_equal(signature, expected)) {
    throw Error(ErrorCode::kForbidden, "the request's signature does not verify under the cluster key");
  }
  if (!dialed(host, request.local_addr)) {
    throw Error(ErrorCode::kForbidden,
                fmt::format("the request was signed for host {}, not this trainer ({})", host, request.local_addr));
  }
  std::lock_guard lock(mutex_);
  while (!nonce_order_.empty() && nonce_order_.front().first < now - 2 * window_.count()) {
    nonces_.erase(nonce_order_.front().second);
    nonce_order_.pop_front();
  }
  if (nonces_.contains(nonce)) throw Error(ErrorCode::kForbidden, "the request's nonce was already used (a replay)");
  if (nonces_.size() >= max_nonces_) {
    throw Error(ErrorCode::kTooManyRequests, "too many signed requests in the replay window; try again later");
  }
  nonces_.insert(nonce);
  nonce_order_.emplace_back(now, nonce);
}

void RequestVerifier::verify_body(const HttpRequest& request) const {
  if (key_.empty()) return;
  if (!tokens_equal(sha256_hex(request.body), request.header("x-mlswarm-content-sha256"))) {
    throw Error(ErrorCode::kForbidden, "the request body is not the one that was signed");
  }
}

std::string RequestVerifier::prove(std::string_view challenge, std::string_view host, std::string_view local) const {
  if (key_.empty() || !is_lower_hex(challenge, 32) || !dialed(host, local)) return {};
  return challenge_proof(key_, challenge, host);
}

}  // namespace mlswarm
