#pragma once

#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

namespace mlswarm {

/// An integer field of JSON that another process wrote (a trainer's /status, the journal,
/// meta.json, a checkpoint's state): `value` must be an integer, or a float with an integral
/// value, within [lo, hi]. Throws Error(kDataError) naming `what` otherwise. nlohmann's own
/// get<int>() converts an out-of-range float with undefined behaviour (found by fuzz_job_spec).
std::int64_t checked_int(const nlohmann::json& value, std::int64_t lo, std::int64_t hi, std::string_view what);

/// checked_int of object[key] when present and not null, else `fallback`. `object` must be
/// an object (else Error(kDataError)).
std::int64_t checked_int_or(const nlohmann::json& object, const char* key, std::int64_t fallback, std::int64_t lo,
                            std::int64_t hi);

}  // namespace mlswarm
