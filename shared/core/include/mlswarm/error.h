#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace mlswarm {

/// What went wrong, in terms a client can act on. Each code maps to one HTTP status.
enum class ErrorCode {
  kInvalidArgument,       ///< 400: the request is malformed or a field is out of range
  kUnauthorized,          ///< 401: no credential
  kForbidden,             ///< 403: a credential, but not the right one
  kNotFound,              ///< 404: unknown id or route
  kMethodNotAllowed,      ///< 405
  kConflict,              ///< 409: the request contradicts the current state
  kSuperseded,            ///< 409: a later attempt of the job owns its files (fencing)
  kPayloadTooLarge,       ///< 413
  kHeadersTooLarge,       ///< 431: a request line and headers over the limit
  kUnsupportedMediaType,  ///< 415
  kTooManyRequests,       ///< 429: a bounded queue is full
  kUnavailable,           ///< 503: not ready, no trainer, shutting down
  kNoSpace,               ///< 503: a disk is full (ENOSPC, EDQUOT): a moment's trouble, retried
  kDataError,             ///< a dataset or checkpoint file is missing or corrupt (a job failure)
  kOutOfMemory,           ///< 507: the host or device ran out of memory
  kLostPeer,              ///< 503: a rank of a data-parallel job lost its peers (a job failure)
  kInternal,              ///< 500: a bug of ours, never something a client did
};

/// The one exception type of mlswarm. Core code throws it; the HTTP edge turns it into
/// the JSON error shape of DESIGN.md. `field` names the offending input field, if any.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message, std::string field = {});

  ErrorCode code() const noexcept { return code_; }
  const std::string& field() const noexcept { return field_; }

 private:
  ErrorCode code_;
  std::string field_;
};

/// The HTTP status for an error code.
int http_status(ErrorCode code) noexcept;

/// The stable machine-readable name of a code, e.g. "invalid_argument".
std::string_view code_name(ErrorCode code) noexcept;

/// `{"error": {"code", "message", "field"?}}`.
nlohmann::json error_json(const Error& error);

}  // namespace mlswarm
