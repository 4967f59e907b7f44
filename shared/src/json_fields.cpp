#include "mlswarm/json_fields.h"

#include <cmath>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {

std::int64_t checked_int(const nlohmann::json& value, std::int64_t lo, std::int64_t hi, std::string_view what) {
  auto out_of_range = [&] {
    return Error(ErrorCode::kDataError, fmt::format("{} must be an integer in {}..{}", what, lo, hi));
  };
  std::int64_t n = 0;
  if (value.is_number_unsigned()) {
    if (value.get<std::uint64_t>() > static_cast<std::uint64_t>(hi)) throw out_of_range();
    n = static_cast<std::int64_t>(value.get<std::uint64_t>());
  } else if (value.is_number_integer()) {
    n = value.get<std::int64_t>();
  } else if (value.is_number_float()) {
    const double d = value.get<double>();
    if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9e15) throw out_of_range();
    n = static_cast<std::int64_t>(d);
  } else {
    throw out_of_range();
  }
  if (n < lo || n > hi) throw out_of_range();
  return n;
}

std::int64_t checked_int_or(const nlohmann::json& object, const char* key, std::int64_t fallback, std::int64_t lo,
                            std::int64_t hi) {
  if (!object.is_object()) throw Error(ErrorCode::kDataError, fmt::format("expected an object holding {}", key));
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  return checked_int(*it, lo, hi, key);
}

}  // namespace mlswarm
