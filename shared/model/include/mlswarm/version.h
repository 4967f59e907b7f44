#pragma once

#include <string>
#include <string_view>

namespace mlswarm {

/// What --version prints: "<program> <version> (git <commit>), LibTorch <version>, CUDA
/// available: yes|no". Implemented in the LibTorch part of the shared library (it asks
/// LibTorch), so only the daemons' main() files call it.
std::string version_text(std::string_view program);

}  // namespace mlswarm
