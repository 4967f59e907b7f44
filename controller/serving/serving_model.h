#pragma once

// The model as the controller serves it: the serving rewrite of a trained model (LibTorch;
// only for serving's translation units and tests).

#include <torch/torch.h>

namespace mlswarm {

/// The model as the controller serves it (CPU or CUDA, eval mode, for channels-last input
/// batches), with the same answers: fold_batch_norm(); use_channels_last(); after every
/// top-level Conv2d a conversion of its output to channels-last (a no-op where it already is:
/// without it the first convolution of a grey-scale model answered NCHW and the max pooling
/// after it took the slow NCHW kernel, a third of the controller's CPU under /predict load);
/// 2x2 max pooling as element-wise maxima of strided views, before the ReLU that preceded it
/// (the same values, ReLU on a quarter of them); ReLUs in place. On the CPU (`on_cpu`; the
/// model stays there) also a first convolution of few input channels as one matrix product
/// and linear layers as W times the transposed batch, the same sums in another order.
/// docs/benchmarks.md.
torch::nn::Sequential prepare_for_serving(const torch::nn::Sequential& model, bool on_cpu = true);

}  // namespace mlswarm
