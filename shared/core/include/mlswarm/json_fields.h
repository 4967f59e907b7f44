#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

namespace mlswarm {

/// The integer a JSON value holds: an integer, or a float with an integral value below 9e15
/// in magnitude; unsigned values beyond int64 saturate to its maximum (so that range checks
/// refuse them). nullopt for anything else. The one place integers are read from JSON that
/// others wrote: nlohmann's get<int>() converts an out-of-range float with undefined behaviour.
std::optional<std::int64_t> json_integer(const nlohmann::json& value);

/// An integer field of JSON that another process wrote (a trainer's /status, the journal,
/// meta.json, a checkpoint's state): json_integer(value) within [lo, hi]. Throws
/// Error(kDataError) naming `what` otherwise (found by fuzz_job_spec).
std::int64_t checked_int(const nlohmann::json& value, std::int64_t lo, std::int64_t hi, std::string_view what);

/// checked_int of object[key] when present and not null, else `fallback`. `object` must be
/// an object (else Error(kDataError)).
std::int64_t checked_int_or(const nlohmann::json& object, const char* key, std::int64_t fallback, std::int64_t lo,
                            std::int64_t hi);

}  // namespace mlswarm
