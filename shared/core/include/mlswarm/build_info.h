#pragma once

#include <string_view>

namespace mlswarm {

/// The project version (CMake's PROJECT_VERSION).
std::string_view mlswarm_version() noexcept;
/// The git commit the binary was built from, "-dirty" when the tree had changes, or
/// "unknown" (a build outside a checkout without MLSWARM_GIT_COMMIT).
std::string_view mlswarm_git_commit() noexcept;

}  // namespace mlswarm
