#include "mlswarm/ids.h"

#include <random>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

bool is_id_start(char c) noexcept { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

bool is_valid_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 64 || !is_id_start(id.front())) return false;
  for (char c : id) {
    if (!is_id_start(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

void require_valid_id(std::string_view id, std::string_view field) {
  if (!is_valid_id(id)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$", field),
                std::string(field));
  }
}

std::string make_id(std::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}-{:016x}", prefix, rng());
}

}  // namespace mlswarm
