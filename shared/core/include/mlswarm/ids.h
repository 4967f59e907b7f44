#pragma once

#include <string>
#include <string_view>

namespace mlswarm {

/// True when `id` may become a path component: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
/// This rejects "", ".", "..", anything with '/' and anything longer than 64 bytes.
bool is_valid_id(std::string_view id) noexcept;

/// Throws Error(kInvalidArgument, field) unless is_valid_id(id).
void require_valid_id(std::string_view id, std::string_view field);

/// A fresh random id such as "job-3f9a1c2e7b4d5a60", valid for is_valid_id.
std::string make_id(std::string_view prefix);

}  // namespace mlswarm
