#pragma once

// Reading what a client sent (POST /train's job spec, POST /sweeps' sweep spec): each refusal
// is Error(kInvalidArgument) naming the field, so the client gets a 400 that says what to fix.
// (JSON that another daemon wrote is read with json_fields.h, whose refusals are kDataError.)

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace mlswarm {

/// Refuses `field` with `message`.
[[noreturn]] void invalid_field(std::string_view field, std::string message);

/// Refuses the first key of `object` not in `known` ("unknown field '<prefix><key>'").
void reject_unknown_fields(const nlohmann::json& object, const std::set<std::string>& known, std::string_view prefix);

/// object[key] as an integer in [lo, hi]: `fallback` when absent or null ("<field> is required"
/// when there is none); a float with an integral value counts, anything else is refused.
std::int64_t get_int(const nlohmann::json& object, const char* key, std::string_view field,
                     std::optional<std::int64_t> fallback, std::int64_t lo, std::int64_t hi);

/// object[key] as a finite number in [lo, hi]: `fallback` when absent or null ("<field> is
/// required" when there is none); anything else is refused.
double get_number(const nlohmann::json& object, const char* key, std::string_view field, std::optional<double> fallback,
                  double lo, double hi);

}  // namespace mlswarm
