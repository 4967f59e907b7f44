#include "mlswarm/torch/model_zoo.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace nn = torch::nn;

namespace {

/// Two 3x3 convolutions with batch norm, added to the input (through a 1x1 convolution when
/// the stride or the width changes), then ReLU.
class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(int in, int out, int stride)
      : conv1_(
            register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false)))),
        bn1_(register_module("bn1", nn::BatchNorm2d(out))),
        conv2_(register_module("conv2", nn::Conv2d(nn::Conv2dOptions(out, out, 3).padding(1).bias(false)))),
        bn2_(register_module("bn2", nn::BatchNorm2d(out))) {
    if (stride != 1 || in != out) {
      shortcut_ = register_module(
          "shortcut",
          nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)), nn::BatchNorm2d(out)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(bn1_(conv1_(x)));
    y = bn2_(conv2_(y));
    return torch::relu(y + (shortcut_ ? shortcut_->forward(x) : x));
  }

 private:
  nn::Conv2d conv1_;
  nn::BatchNorm2d bn1_;
  nn::Conv2d conv2_;
  nn::BatchNorm2d bn2_;
  nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(BasicBlock);

/// The convnet's classifier reads at most this many positions a side.
constexpr int kConvnetMaxGrid = 8;

nn::Sequential make_resnet(int channels, int classes) {
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(channels, 32, 3).padding(1).bias(false)), nn::BatchNorm2d(32),
                     nn::ReLU());
  int in = 32;
  for (int stage = 0; stage < 3; ++stage) {
    const int out = 32 << stage;
    for (int block = 0; block < 2; ++block) {
      net->push_back(BasicBlock(in, out, stage > 0 && block == 0 ? 2 : 1));
      in = out;
    }
  }
  net->push_back(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  net->push_back(nn::Flatten());
  net->push_back(nn::Linear(in, classes));
  return net;
}

}  // namespace

torch::nn::Sequential make_model(ModelType model_type, int channels, int height, int width, int classes) {
  switch (model_type) {
    case ModelType::kResnet:
      return make_resnet(channels, classes);
    case ModelType::kConvnet: {
      nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(channels, 32, 3).padding(1).bias(false)), nn::BatchNorm2d(32),
                         nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(2)),
                         nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1).bias(false)), nn::BatchNorm2d(64),
                         nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(2)));
      // Up to 32 x 32 the classifier sees every quarter-resolution position (28 x 28: 7 x 7).
      // Larger images are averaged down to at most 8 x 8 positions first, so that the
      // classifier stays the size of a 32 x 32 model's at any input size (224 x 224: 4,096
      // inputs rather than 200,704).
      int rows = height / 4;
      int cols = width / 4;
      if (rows > kConvnetMaxGrid || cols > kConvnetMaxGrid) {
        rows = std::min(rows, kConvnetMaxGrid);
        cols = std::min(cols, kConvnetMaxGrid);
        net->push_back(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({rows, cols})));
      }
      net->push_back(nn::Flatten());
      net->push_back(nn::Linear(64 * rows * cols, 128));
      net->push_back(nn::ReLU());
      net->push_back(nn::Linear(128, classes));
      return net;
    }
    case ModelType::kMlp:
      return nn::Sequential(nn::Flatten(), nn::Linear(channels * height * width, 256), nn::ReLU(), nn::Linear(256, 128),
                            nn::ReLU(), nn::Linear(128, classes));
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown model_type", "model_type");
}

std::string save_module(const torch::nn::Sequential& model) {
  torch::serialize::OutputArchive archive;
  model->save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return std::move(out).str();
}

void load_module(torch::nn::Sequential& model, const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(in, torch::Device(torch::kCPU));
    model->load(archive);
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kDataError, fmt::format("weights do not load: {}", e.what_without_backtrace()));
  }
}

torch::nn::Sequential load_trained_model(const std::filesystem::path& home_dir, const std::string& model_id,
                                         ModelMeta* meta_out, int version) {
  auto dir = model_version_dir(home_dir, model_id, version);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(dir / "meta.json", ec)) {
    throw Error(ErrorCode::kNotFound,
                version > 0 ? fmt::format("model '{}' has no version {}", model_id, version)
                            : fmt::format("unknown model '{}'", model_id),
                version > 0 ? "version" : "model_id");
  }
  // The trainer replaces model.pt, then meta.json; a reader between the two renames sees a
  // CRC mismatch and simply reads both again.
  ModelMeta meta;
  std::string bytes;
  for (int attempt = 0;; ++attempt) {
    try {
      meta = model_meta_from_json(nlohmann::json::parse(read_file(dir / "meta.json", 16u << 20)));
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorCode::kDataError, fmt::format("{}: {}", (dir / "meta.json").string(), e.what()));
    }
    bytes = read_file(dir / "model.pt", 1u << 30);
    if (crc32_of(bytes) == meta.model_crc32) break;
    if (attempt == 4) {
      throw Error(ErrorCode::kDataError,
                  fmt::format("{}: CRC mismatch with meta.json (torn or stale file)", (dir / "model.pt").string()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto model =
      make_model(meta.model_type, meta.channels, meta.height, meta.width, static_cast<int>(meta.class_names.size()));
  load_module(model, bytes);
  model->eval();
  if (meta_out) *meta_out = std::move(meta);
  return model;
}

torch::Tensor normalize_images(const torch::Tensor& uint8_images, const std::vector<double>& mean,
                               const std::vector<double>& std) {
  auto c = static_cast<std::int64_t>(mean.size());
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(uint8_images.device());
  auto m = torch::tensor(std::vector<float>(mean.begin(), mean.end())).to(opts).view({1, c, 1, 1});
  auto s = torch::tensor(std::vector<float>(std.begin(), std.end())).to(opts).view({1, c, 1, 1});
  return uint8_images.to(torch::kFloat32).div_(255.0).sub_(m).div_(s);
}

void use_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

torch::nn::Sequential fold_batch_norm(const torch::nn::Sequential& model) {
  torch::NoGradGuard no_grad;
  nn::Sequential out;
  std::vector<nn::AnyModule> layers(model->begin(), model->end());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    auto* conv_ptr = dynamic_cast<nn::Conv2dImpl*>(layers[i].ptr().get());
    auto* bn_ptr = i + 1 < layers.size() ? dynamic_cast<nn::BatchNorm2dImpl*>(layers[i + 1].ptr().get()) : nullptr;
    if (conv_ptr != nullptr && bn_ptr != nullptr) {
      const auto& conv = *conv_ptr;
      const auto& bn = *bn_ptr;
      if (bn.options.track_running_stats() && bn.options.affine()) {
        const auto& o = conv.options;
        nn::Conv2d fused(nn::Conv2dOptions(o.in_channels(), o.out_channels(), o.kernel_size())
                             .stride(o.stride())
                             .padding(o.padding())
                             .dilation(o.dilation())
                             .groups(o.groups())
                             .padding_mode(o.padding_mode())
                             .bias(true));
        fused->eval();
        const auto scale = bn.weight / torch::sqrt(bn.running_var + bn.options.eps());
        fused->weight.copy_(conv.weight * scale.view({-1, 1, 1, 1}));
        auto bias = conv.bias.defined() ? conv.bias : torch::zeros_like(bn.running_mean);
        fused->bias.copy_((bias - bn.running_mean) * scale + bn.bias);
        out->push_back(fused);
        ++i;
        continue;
      }
    }
    out->push_back(layers[i]);
  }
  out->eval();
  return out;
}

}  // namespace mlswarm
