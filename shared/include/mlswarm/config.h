#pragma once

#include <string>

namespace mlswarm {

/// The value of environment variable `name`, or `fallback` when it is unset or empty.
std::string env_or(const char* name, std::string fallback);

/// The integer value of `name`, or `fallback` when unset or empty. Throws Error
/// (kInvalidArgument, field = name) when it is set to something that is not an integer.
int env_int_or(const char* name, int fallback);

}  // namespace mlswarm
