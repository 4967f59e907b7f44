#include "mlswarm/version.h"

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "mlswarm/build_info.h"

namespace mlswarm {

std::string version_text(std::string_view program) {
  return fmt::format("{} {} (git {}), LibTorch {}, CUDA available: {}", program, mlswarm_version(),
                     mlswarm_git_commit(), TORCH_VERSION, torch::cuda::is_available() ? "yes" : "no");
}

}  // namespace mlswarm
