#include "mlswarm/error.h"

#include <nlohmann/json.hpp>

namespace mlswarm {

Error::Error(ErrorCode code, std::string message, std::string field)
    : std::runtime_error(std::move(message)), code_(code), field_(std::move(field)) {}

int http_status(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthorized:
      return 401;
    case ErrorCode::kForbidden:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kMethodNotAllowed:
      return 405;
    case ErrorCode::kConflict:
      return 409;
    case ErrorCode::kSuperseded:
      return 409;
    case ErrorCode::kPayloadTooLarge:
      return 413;
    case ErrorCode::kHeadersTooLarge:
      return 431;
    case ErrorCode::kUnsupportedMediaType:
      return 415;
    case ErrorCode::kTooManyRequests:
      return 429;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kNoSpace:
      return 503;
    case ErrorCode::kDataError:
      return 422;
    case ErrorCode::kOutOfMemory:
      return 507;
    case ErrorCode::kLostPeer:
      return 503;
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

std::string_view code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kUnauthorized:
      return "unauthorized";
    case ErrorCode::kForbidden:
      return "forbidden";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kMethodNotAllowed:
      return "method_not_allowed";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kSuperseded:
      return "superseded";
    case ErrorCode::kPayloadTooLarge:
      return "payload_too_large";
    case ErrorCode::kHeadersTooLarge:
      return "headers_too_large";
    case ErrorCode::kUnsupportedMediaType:
      return "unsupported_media_type";
    case ErrorCode::kTooManyRequests:
      return "too_many_requests";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kNoSpace:
      return "no_space";
    case ErrorCode::kDataError:
      return "data_error";
    case ErrorCode::kOutOfMemory:
      return "out_of_memory";
    case ErrorCode::kLostPeer:
      return "lost_peer";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}

nlohmann::json error_json(const Error& error) {
  nlohmann::json body = {{"code", code_name(error.code())}, {"message", error.what()}};
  if (!error.field().empty()) body["field"] = error.field();
  return {{"error", std::move(body)}};
}

}  // namespace mlswarm
