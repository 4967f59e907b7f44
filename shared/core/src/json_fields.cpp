#include "mlswarm/json_fields.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {

std::optional<std::int64_t> json_integer(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    const std::uint64_t u = value.get<std::uint64_t>();
    return u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
               ? std::numeric_limits<std::int64_t>::max()
               : static_cast<std::int64_t>(u);
  }
  if (value.is_number_integer()) return value.get<std::int64_t>();
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9e15) return static_cast<std::int64_t>(d);
  }
  return std::nullopt;
}

std::int64_t checked_int(const nlohmann::json& value, std::int64_t lo, std::int64_t hi, std::string_view what) {
  const auto n = json_integer(value);
  if (!n || *n < lo || *n > hi) {
    throw Error(ErrorCode::kDataError, fmt::format("{} must be an integer in {}..{}", what, lo, hi));
  }
  return *n;
}

std::int64_t checked_int_or(const nlohmann::json& object, const char* key, std::int64_t fallback, std::int64_t lo,
                            std::int64_t hi) {
  if (!object.is_object()) throw Error(ErrorCode::kDataError, fmt::format("expected an object holding {}", key));
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  return checked_int(*it, lo, hi, key);
}

}  // namespace mlswarm
