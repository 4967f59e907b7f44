// The device a job trains on and the fast path (bf16 autocast, channels-last) it takes there.

#include "training_parts.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/torch/model_zoo.h"

namespace mlswarm {

using nlohmann::json;

torch::Device pick_device(TrainDevice wanted) {
  bool has_cuda = torch::cuda::is_available();
  if (wanted == TrainDevice::kCuda && !has_cuda) {
    throw Error(ErrorCode::kInvalidArgument,
                "train_opts.device is \"cuda\" but this trainer has no CUDA device "
                "(LibTorch built without CUDA, or no GPU visible)",
                "train_opts.device");
  }
  return (wanted == TrainDevice::kCuda || (wanted == TrainDevice::kAuto && has_cuda)) ? torch::Device(torch::kCUDA)
                                                                                      : torch::Device(torch::kCPU);
}

FastPath fast_path_for(const TrainingEnv& env, const torch::Device& device, const JobSpec& spec, bool bf16) {
  FastPath f;
  // Channels-last only pays for convolutions, and a data-parallel rank's gradients are views
  // into NCHW allreduce buckets.
  const bool layout_may_change =
      !(spec.placement && spec.placement->world_size > 1) && spec.model_type != ModelType::kMlp;
  if (device.is_cuda()) {
    f.gpu_lacks_bf16 = env.cuda_fast_path && !bf16;
    f.amp = env.cuda_fast_path && bf16;
    f.channels_last = f.amp && layout_may_change;
  } else {
    f.channels_last = env.cpu_channels_last && layout_may_change;
  }
  return f;
}

FastPath fast_path_for(const TrainingEnv& env, const torch::Device& device, const JobSpec& spec) {
  const bool bf16 = device.is_cuda() && at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8();
  return fast_path_for(env, device, spec, bf16);
}

torch::Tensor in_layout(const torch::Tensor& x, bool channels_last) {
  if (x.dim() != 4) return x;
  const auto format = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  if (x.is_contiguous(format) && x.suggest_memory_format() == format) return x;
  return torch::empty_like(x, x.options(), format).copy_(x);
}

}  // namespace mlswarm
