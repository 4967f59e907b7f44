#pragma once

// Calls between the controller and its trainers, signed with the cluster key
// (CLUSTER_TOKEN_FILE) so that the key itself never crosses the network.
//
// A signed request carries four headers:
//   X-Mlswarm-Date            Unix seconds when it was signed
//   X-Mlswarm-Nonce           32 random hex digits, never accepted twice
//   X-Mlswarm-Content-SHA256  the SHA-256 of the body, hex
//   X-Mlswarm-Signature       HMAC-SHA256(key, "mlswarm-v1\n" method "\n" target "\n" host "\n"
//                             date "\n" nonce "\n" content-sha256), hex
// where target is the path with its query and host the Host header ("ip:port"). A trainer
// proves it holds the key during discovery by answering `X-Mlswarm-Challenge: <nonce>` on
// GET /type with "proof": HMAC-SHA256(key, "mlswarm-challenge-v1\n" nonce "\n" host), and only
// for a host that is one of its own addresses, so a proof cannot be relayed for another host.

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mlswarm/http.h"

namespace mlswarm {

inline constexpr const char* kDateHeader = "X-Mlswarm-Date";
inline constexpr const char* kNonceHeader = "X-Mlswarm-Nonce";
inline constexpr const char* kContentHashHeader = "X-Mlswarm-Content-SHA256";
inline constexpr const char* kSignatureHeader = "X-Mlswarm-Signature";
inline constexpr const char* kChallengeHeader = "X-Mlswarm-Challenge";

std::string sha256_hex(std::string_view data);
std::string hmac_sha256_hex(std::string_view key, std::string_view message);
/// `bytes` random bytes from OpenSSL's CSPRNG, as hex.
std::string random_hex(std::size_t bytes);

/// The headers that sign a request to `host` ("ip:port"), dated `unix_seconds`.
std::vector<std::pair<std::string, std::string>> sign_request(std::string_view key, std::string_view method,
                                                              std::string_view target, std::string_view host,
                                                              std::string_view body, long long unix_seconds);

/// The proof that answers a discovery challenge sent to `host`.
std::string challenge_proof(std::string_view key, std::string_view challenge, std::string_view host);

/// Whether `host` ("ip" or "ip:port") is an IPv4 address of this machine (one a socket can
/// bind to). A trainer only proves itself for its own addresses.
bool is_own_address(std::string_view host);

/// Whether `host` (a Host header, "ip:port") names the connection's local end `local` exactly,
/// the address and port the caller dialed; when `local` is unknown (a request built in a test),
/// whether it is an address of this machine.
bool is_dialed_address(std::string_view host, std::string_view local);

/// Checks signed requests on the trainer. Thread-safe: `mutex_` guards the nonces seen.
class RequestVerifier {
 public:
  /// `window`: how far a request's date may be from this clock (both ways); nonces are
  /// remembered that long. `max_nonces` bounds that memory.
  /// `advertised`: an "ip:port" accepted as the dialed address besides the one a request
  /// arrives on (a port forward in front of the trainer: TRAIN_ADVERTISE_ADDRESS).
  explicit RequestVerifier(std::string key, std::chrono::seconds window = std::chrono::seconds(30),
                           std::size_t max_nonces = 100000, std::string advertised = {});

  bool enabled() const { return !key_.empty(); }

  /// Checks the signature headers of a request whose body has not been read yet. Throws
  /// Error(kUnauthorized) when they are missing, Error(kForbidden) when the signature is
  /// wrong, the date is outside the window, the nonce was seen, or the Host is not the
  /// address and port this request arrived on (is_dialed_address).
  void verify_head(const HttpRequest& request, long long now_unix_seconds);

  /// After the body is read: throws Error(kForbidden) unless its SHA-256 is the signed one.
  void verify_body(const HttpRequest& request) const;

  /// The proof for a challenge to `host`; empty when this trainer has no key or `host` is
  /// not the address and port the challenge arrived on (`local`, is_dialed_address): a
  /// trainer proves only for itself, never for a relay on another address of its machine.
  std::string prove(std::string_view challenge, std::string_view host, std::string_view local) const;

 private:
  bool dialed(std::string_view host, std::string_view local) const;

  std::string key_;
  std::string advertised_;
  std::chrono::seconds window_;
  std::size_t max_nonces_;
  std::mutex mutex_;
  std::unordered_set<std::string> nonces_;
  std::deque<std::pair<long long, std::string>> nonce_order_;  ///< (date, nonce), oldest first
};

}  // namespace mlswarm
