#include "mlswarm/request_fields.h"

#include <fmt/format.h>

#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"

namespace mlswarm {

void invalid_field(std::string_view field, std::string message) {
  throw Error(ErrorCode::kInvalidArgument, std::move(message), std::string(field));
}

void reject_unknown_fields(const nlohmann::json& object, const std::set<std::string>& known, std::string_view prefix) {
  for (const auto& [key, value] : object.items()) {
    if (!known.contains(key)) {
      const std::string field = fmt::format("{}{}", prefix, key);
      invalid_field(field, fmt::format("unknown field '{}'", field));
    }
  }
}

std::int64_t get_int(const nlohmann::json& object, const char* key, std::string_view field,
                     std::optional<std::int64_t> fallback, std::int64_t lo, std::int64_t hi) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    if (!fallback) invalid_field(field, fmt::format("{} is required", field));
    return *fallback;
  }
  const auto value = json_integer(*it);
  if (!value) invalid_field(field, fmt::format("{} must be an integer", field));
  if (*value < lo || *value > hi) invalid_field(field, fmt::format("{} must be between {} and {}", field, lo, hi));
  return *value;
}

double get_number(const nlohmann::json& object, const char* key, std::string_view field, std::optional<double> fallback,
                  double lo, double hi) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    if (!fallback) invalid_field(field, fmt::format("{} is required", field));
    return *fallback;
  }
  if (!it->is_number()) invalid_field(field, fmt::format("{} must be a number", field));
  const double value = it->get<double>();
  if (!(value >= lo && value <= hi)) invalid_field(field, fmt::format("{} must be between {} and {}", field, lo, hi));
  return value;
}

}  // namespace mlswarm
