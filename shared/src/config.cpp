#include "mlswarm/config.h"

#include <cstdlib>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {

std::string env_or(const char* name, std::string fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

int env_int_or(const char* name, int fallback) {
  std::string text = env_or(name, "");
  if (text.empty()) return fallback;
  std::size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || used == 0) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{} must be an integer, got '{}'", name, text), name);
  }
  return value;
}

}  // namespace mlswarm
