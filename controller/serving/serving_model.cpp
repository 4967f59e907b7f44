#include "serving_model.h"

#include <optional>

#include "mlswarm/torch/model_zoo.h"
#include "serving_kernels.h"

namespace mlswarm {
namespace nn = torch::nn;

namespace {

/// A MaxPool2d of a 2x2 window, stride 2, no padding, dilation or ceil mode (the convnet's).
bool is_plain_2x2_pool(const nn::AnyModule& layer) {
  const auto* pool = dynamic_cast<const nn::MaxPool2dImpl*>(layer.ptr().get());
  if (pool == nullptr) return false;
  const auto& o = pool->options;
  const auto all = [](const auto& values, std::int64_t v) {
    return std::all_of(values->begin(), values->end(), [v](std::int64_t x) { return x == v; });
  };
  return all(o.kernel_size(), 2) && all(o.stride(), 2) && all(o.padding(), 0) && all(o.dilation(), 1) && !o.ceil_mode();
}

/// The same maximum as that pooling (rows and columns beyond an even count dropped, as it
/// does; NaN propagates in both), as three element-wise maxima of strided views: on
/// channels-last activations about twice as fast here as LibTorch 1.13's pooling kernel,
/// which also computes the indices that inference throws away.
torch::Tensor max_of_2x2(const torch::Tensor& x) {
  const std::int64_t h = x.size(-2) / 2 * 2;
  const std::int64_t w = x.size(-1) / 2 * 2;
  const auto at = [&](std::int64_t row, std::int64_t col) { return x.slice(-2, row, h, 2).slice(-1, col, w, 2); };
  return torch::maximum(torch::maximum(at(0, 0), at(0, 1)), torch::maximum(at(1, 0), at(1, 1)));
}

/// A convolution of few input channels (grey-scale or RGB images: the first layer), computed
/// directly into channels-last output (serving::small_input_conv). LibTorch 1.13's oneDNN path
/// takes about 1.1 ms for the convnet's first layer at batch 8 here (1 input channel: nothing
/// to vectorise over), a matrix product over the 9 stacked shifted views about 0.3 ms, of
/// which most was the dozen small operators that stack them. Stride 1, no dilation or
/// groups, zero padding only; inputs other than float32 take LibTorch's convolution.
std::optional<nn::Functional> as_direct_convolution(const nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  // Unqualified: LibTorch 1.13's options hold a c10::variant, 2.x's a std::variant, and
  // argument-dependent lookup finds the get_if/holds_alternative of whichever it is.
  const auto* padding = get_if<torch::ExpandingArray<2>>(&o.padding());
  const std::int64_t in = o.in_channels();
  const std::int64_t k = (*o.kernel_size())[0];
  if (padding == nullptr || in > 4 || o.groups() != 1 ||
      !holds_alternative<torch::enumtype::kZeros>(o.padding_mode()) || (*o.kernel_size())[1] != k ||
      (*o.stride())[0] != 1 || (*o.stride())[1] != 1 || (*o.dilation())[0] != 1 || (*o.dilation())[1] != 1 ||
      (**padding)[0] != (**padding)[1]) {
    return std::nullopt;
  }
  const std::int64_t pad = (**padding)[0];
  const std::int64_t out = o.out_channels();
  // [C*k*k][out], rows in the order of the weight's own (channel, row, column) flattening.
  torch::Tensor taps = conv.weight.detach().reshape({out, in * k * k}).t().contiguous();
  torch::Tensor bias = conv.bias.defined() ? conv.bias.detach().contiguous() : torch::zeros({out});
  const torch::Tensor weight = conv.weight.detach().clone();
  const torch::Tensor conv_bias = conv.bias.defined() ? conv.bias.detach().clone() : torch::Tensor();
  return nn::Functional([=](const torch::Tensor& x) {
    if (x.dim() == 4 && x.size(1) == in && x.device().is_cpu() && x.scalar_type() == torch::kFloat) {
      return serving::small_input_conv(x, taps, bias, k, pad);
    }
    return torch::conv2d(x, weight, conv_bias, 1, pad).contiguous(torch::MemoryFormat::ChannelsLast);
  });
}

/// Pooling as serving::max_pool_2x2 on float32 channels-last CPU activations (one pass, no
/// indices, ReLU fused when it follows or precedes), else as max_of_2x2.
nn::Functional as_pooling(bool relu) {
  return nn::Functional([relu](const torch::Tensor& x) {
    if (serving::is_nhwc_float(x)) return serving::max_pool_2x2(x, relu);
    torch::Tensor y = max_of_2x2(x);
    return relu ? y.relu_() : y;
  });
}

/// A linear layer for serving batches on the CPU. Up to 16 rows: serving::linear, which reads
/// the weight as it lies (OpenBLAS packs all of it on every call: for the convnet's 3136x128 at
/// batch 8 that packing was most of the layer's time). More rows: W times the transposed batch,
/// read back transposed (OpenBLAS then packs the small side). When it follows a Flatten
/// (`flattens`) of channels-last activations, the weight's columns are put once in the
/// activations' own (row, column, channel) order, so the batch is read as it lies instead of
/// being copied into (channel, row, column) order first.
nn::Functional as_serving_linear(const nn::LinearImpl& linear, bool flattens) {
  torch::Tensor bias =
      linear.bias.defined() ? linear.bias.detach().contiguous().clone() : torch::zeros({linear.options.out_features()});
  // One copy of the weight, in the order of the last activations seen (memory: a served model
  // holds its weights once, as SERVE_MEMORY_MB counts them).
  struct Ordered {
    std::mutex mutex;
    std::array<std::int64_t, 3>
        shape{};  // channels, rows, columns of the (row, column, channel) order; zeros: as trained
    torch::Tensor weight;
    torch::Tensor as_trained() const {  // under mutex
      if (shape[0] == 0) return weight;
      return weight.view({weight.size(0), shape[1], shape[2], shape[0]})
          .permute({0, 3, 1, 2})
          .reshape({weight.size(0), -1})
          .contiguous();
    }
  };
  auto ordered = std::make_shared<Ordered>();
  ordered->weight = linear.weight.detach().contiguous();
  return nn::Functional([bias, flattens, ordered](const torch::Tensor& x) {
    torch::Tensor w;
    torch::Tensor rows;
    if (flattens && x.dim() == 4 && x.is_contiguous(torch::MemoryFormat::ChannelsLast) && x.size(1) > 1 &&
        x.size(1) * x.size(2) * x.size(3) == ordered->weight.size(1)) {
      {
        std::lock_guard lock(ordered->mutex);
        const std::array<std::int64_t, 3> shape{x.size(1), x.size(2), x.size(3)};
        if (ordered->shape != shape) {
          torch::Tensor trained = ordered->as_trained();
          ordered->weight = trained.view({trained.size(0), shape[0], shape[1], shape[2]})
                                .permute({0, 2, 3, 1})
                                .reshape({trained.size(0), trained.size(1)})
                                .contiguous();
          ordered->shape = shape;
        }
        w = ordered->weight;
      }
      rows = x.permute({0, 2, 3, 1}).reshape({x.size(0), -1});
    } else if (flattens) {  // not channels-last: the weight as trained (reordered back if it was)
      {
        std::lock_guard lock(ordered->mutex);
        w = ordered->as_trained();
      }
      rows = x.reshape({x.size(0), -1});
    } else {
      w = ordered->weight;  // never reordered
      rows = x.reshape({x.size(0), -1});
    }
    if (rows.size(0) <= 16 && rows.device().is_cpu() && rows.scalar_type() == torch::kFloat) {
      return serving::linear(rows.contiguous(), w, bias);
    }
    return torch::addmm(bias.view({-1, 1}), w, rows.t()).t();
  });
}

/// A Flatten of everything after the batch dimension (nn::Flatten's default).
bool is_batch_flatten(const nn::AnyModule& layer) {
  const auto* flatten = dynamic_cast<const nn::FlattenImpl*>(layer.ptr().get());
  return flatten != nullptr && flatten->options.start_dim() == 1 && flatten->options.end_dim() == -1;
}

bool is_relu(const nn::AnyModule& layer) {
  const auto* relu = dynamic_cast<const nn::ReLUImpl*>(layer.ptr().get());
  return relu != nullptr;
}

}  // namespace

torch::nn::Sequential prepare_for_serving(const torch::nn::Sequential& model, bool on_cpu) {
  nn::Sequential folded = fold_batch_norm(model);
  std::vector<nn::AnyModule> layers(folded->begin(), folded->end());
  nn::Sequential out;
  const auto relu_in_place = nn::Functional([](torch::Tensor x) { return x.relu_(); });
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& layer = layers[i];
    if (const auto* conv = dynamic_cast<const nn::Conv2dImpl*>(layer.ptr().get())) {
      auto direct = on_cpu ? as_direct_convolution(*conv) : std::nullopt;
      if (direct) {
        out->push_back(*direct);  // already channels-last
      } else {
        out->push_back(layer);
        out->push_back(
            nn::Functional([](const torch::Tensor& x) { return x.contiguous(torch::MemoryFormat::ChannelsLast); }));
      }
    } else if (const auto* linear = dynamic_cast<const nn::LinearImpl*>(layer.ptr().get()); linear && on_cpu) {
      out->push_back(as_serving_linear(*linear, false));
    } else if (const auto* next =
                   i + 1 < layers.size() ? dynamic_cast<const nn::LinearImpl*>(layers[i + 1].ptr().get()) : nullptr;
               next != nullptr && on_cpu && is_batch_flatten(layer)) {
      out->push_back(as_serving_linear(*next, true));  // reads the activations unflattened
      ++i;
    } else if (is_relu(layer) && i + 1 < layers.size() && is_plain_2x2_pool(layers[i + 1])) {
      // max(relu(a), relu(b)) == relu(max(a, b)) exactly: ReLU on a quarter of the values.
      out->push_back(as_pooling(true));
      ++i;
    } else if (is_plain_2x2_pool(layer)) {
      const bool relu_next = i + 1 < layers.size() && is_relu(layers[i + 1]);
      out->push_back(as_pooling(relu_next));
      i += relu_next ? 1 : 0;
    } else if (is_relu(layer) && i > 0) {
      out->push_back(relu_in_place);  // its input is the previous layer's own fresh output
    } else {
      out->push_back(layer);
    }
  }
  use_channels_last(*out);
  out->eval();
  return out;
}

}  // namespace mlswarm
