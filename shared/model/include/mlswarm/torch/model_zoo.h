#pragma once

// Includes LibTorch: only for the few translation units that run models.

#include <string>

#include <torch/torch.h>

#include "mlswarm/model_meta.h"

namespace mlswarm {

/// Builds an untrained classifier. "convnet": two 3x3 conv layers (32, 64 channels) each
/// with batch norm, ReLU and 2x2 max pooling, then Linear(…, 128), ReLU, Linear(128, classes).
/// "mlp": Flatten, 256, 128, classes with ReLU. "resnet": a 3x3 conv stem (32 channels), three
/// stages of two basic residual blocks (32, 64, 128 channels; the last two stages halve the
/// resolution), global average pooling, Linear(128, classes): for 28x28 and 32x32 inputs (any
/// size works). Throws Error(kInvalidArgument) for another type.
torch::nn::Sequential make_model(ModelType model_type, int channels, int height, int width, int classes);

/// Serialises a module's parameters and buffers (what model.pt holds).
std::string save_module(const torch::nn::Sequential& model);

/// Loads weights saved by save_module (on any device) onto the CPU, into a model of the same
/// architecture.
/// Throws Error(kDataError) when the bytes do not fit the architecture.
void load_module(torch::nn::Sequential& model, const std::string& bytes);

/// Reads `HOME_DIR/models/<id>/{meta.json,model.pt}` (the latest version), or with
/// `version` > 0 the pinned `HOME_DIR/models/<id>/versions/<version>/`, checks model.pt's CRC
/// against meta.json, and returns the model in eval mode on the CPU.
/// Throws Error(kNotFound) when the model or version does not exist, Error(kDataError) when corrupt.
torch::nn::Sequential load_trained_model(const std::filesystem::path& home_dir, const std::string& model_id,
                                         ModelMeta* meta_out, int version = 0);

/// Stores every 4-D parameter (the convolutions' weights) channels-last (NHWC), in place: with
/// channels-last inputs LibTorch then runs convolutions, batch norm and pooling in that
/// layout (on this CPU 2-4x faster for the convnet than NCHW, whose max pooling alone took
/// 40% of a forward pass; docs/benchmarks.md). Values and the state dict stay as they were.
/// A convolution of a one-channel input still answers NCHW (the layouts coincide for C = 1
/// and LibTorch then picks contiguous); prepare_for_serving() (controller/serving) converts after it.
void use_channels_last(torch::nn::Module& model);

/// For inference only: a model whose every Conv2d directly followed by a BatchNorm2d (at the
/// top level of `model`, as in the convnet) is one Conv2d with the batch norm folded into its
/// weights and bias (eval mode: running statistics). Other layers are shared with `model`.
/// Same answers up to float rounding, two fewer passes over the activations.
torch::nn::Sequential fold_batch_norm(const torch::nn::Sequential& model);

/// Scales bytes to 0..1 and applies the per-channel normalisation: [N][C][H][W] float.
torch::Tensor normalize_images(const torch::Tensor& uint8_images, const std::vector<double>& mean,
                               const std::vector<double>& std);

}  // namespace mlswarm
