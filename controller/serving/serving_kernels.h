// CPU kernels for the served model's layers where LibTorch spends more on dispatch, index
// bookkeeping or packing than on the arithmetic at serving batch sizes (see prepare_for_serving).
// Float32, CPU, channels-last activations; each checks its input and throws c10::Error when it
// cannot take it, so callers check the input first and fall back to LibTorch's own operators.
// Pure functions of their arguments (a fresh output tensor each call): safe from any thread.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace mlswarm::serving {

/// True when x is a float32 CPU tensor of 4 dimensions, channels-last contiguous.
bool is_nhwc_float(const torch::Tensor& x);

/// 2x2 max pooling with stride 2, no padding (an odd last row or column is dropped, as
/// MaxPool2d drops it), then ReLU when `relu`: max(relu(a), relu(b)) == relu(max(a, b)), so
/// this equals ReLU followed by pooling too. NaN propagates like torch::maximum. Needs
/// is_nhwc_float(x); answers channels-last.
torch::Tensor max_pool_2x2(const torch::Tensor& x, bool relu);

/// A convolution of few input channels (a model's first layer), stride 1, zero padding `pad`
/// on every side, square kernel k, computed directly into a channels-last output: each output
/// pixel is its bias plus the sum over the in*k*k taps of input value times that tap's row of
/// `taps` ([in*k*k][out], rows in the weight's (channel, row, column) order). x: float32 CPU,
/// [N, in, H, W], any strides.
torch::Tensor small_input_conv(const torch::Tensor& x, const torch::Tensor& taps, const torch::Tensor& bias,
                               std::int64_t k, std::int64_t pad);

/// A linear layer for the few rows of a serving batch: x [N][in] times weight^T ([out][in])
/// plus bias, reading the weight as it lies instead of packing it first (OpenBLAS packs the
/// whole 3136x128 matrix of the convnet on every call: most of that layer's time at batch 8).
/// Worth it up to about 16 rows; x contiguous float32 on the CPU.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace mlswarm::serving
