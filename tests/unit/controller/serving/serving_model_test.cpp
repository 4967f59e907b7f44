// The model as served (prepare_for_serving) against the model as trained, in eval mode.

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "mlswarm/torch/model_zoo.h"
#include "serving_kernels.h"
#include "serving_model.h"

namespace mlswarm {
namespace {

/// Batch norm with statistics and affine parameters far from the identity, as after training.
void randomise_batch_norms(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& module : model.modules()) {
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(module.get())) {
      bn->running_mean.uniform_(-0.5, 0.5);
      bn->running_var.uniform_(0.5, 2.0);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
    }
  }
}

void expect_served_like_trained(ModelType model_type, int channels, int height, int width) {
  torch::manual_seed(3);
  auto model = make_model(model_type, channels, height, width, 10);
  randomise_batch_norms(*model);
  model->eval();
  auto served = prepare_for_serving(model);
  c10::InferenceMode inference;
  for (const int batch : {1, 7}) {
    const auto images = torch::rand({batch, channels, height, width});
    const auto expected = torch::softmax(model->forward(images), 1);
    const auto got = torch::softmax(served->forward(images.contiguous(torch::MemoryFormat::ChannelsLast)), 1);
    EXPECT_LT((got - expected).abs().max().item<float>(), 1e-5F)
        << to_string(model_type) << " " << channels << "x" << height << "x" << width << " batch " << batch;
    EXPECT_TRUE(torch::equal(got.argmax(1), expected.argmax(1)));
  }
}

TEST(PrepareForServing, GivesTheTrainedModelsProbabilities) {
  expect_served_like_trained(ModelType::kConvnet, 1, 28, 28);
  expect_served_like_trained(ModelType::kConvnet, 3, 32, 32);
  expect_served_like_trained(ModelType::kConvnet, 1, 27, 29);  // odd sizes: pooling drops the last row and column
  expect_served_like_trained(ModelType::kConvnet, 3, 64, 64);  // a folder dataset's: averaged down to 8 x 8
  expect_served_like_trained(ModelType::kConvnet, 3, 100, 60);
  expect_served_like_trained(ModelType::kResnet, 3, 64, 64);
  expect_served_like_trained(ModelType::kResnet, 1, 28, 28);
  expect_served_like_trained(ModelType::kResnet, 3, 32, 32);
  expect_served_like_trained(ModelType::kMlp, 1, 28, 28);
}

TEST(PrepareForServing, PoolsAndActivatesChannelsLast) {
  auto model = make_model(ModelType::kConvnet, 1, 28, 28, 10);
  model->eval();
  auto served = prepare_for_serving(model);
  c10::InferenceMode inference;
  auto x = torch::rand({4, 1, 28, 28}).contiguous(torch::MemoryFormat::ChannelsLast);
  int pooled = 0;
  for (auto& layer : *served) {
    x = layer.forward(x);
    // A convolution of one input channel answers NCHW (the layouts coincide for C = 1); the
    // conversion right after it is what this checks.
    if (x.dim() == 4 && dynamic_cast<torch::nn::Conv2dImpl*>(layer.ptr().get()) == nullptr) {
      EXPECT_TRUE(x.is_contiguous(torch::MemoryFormat::ChannelsLast)) << "after layer of output " << x.sizes();
      pooled += x.size(2) == 14 || x.size(2) == 7 ? 1 : 0;
    }
  }
  EXPECT_GT(pooled, 0);
}

TEST(ServingKernels, PoolLikeMaxPool2dThenReluOnAnySize) {
  torch::manual_seed(5);
  c10::InferenceMode inference;
  for (const auto& size : std::vector<std::vector<std::int64_t>>{
           {3, 32, 28, 28}, {2, 5, 7, 9}, {1, 64, 3, 2}, {4, 3, 2, 2}, {0, 4, 4, 4}}) {
    const auto x = torch::randn(size).contiguous(torch::MemoryFormat::ChannelsLast);
    const auto pooled = torch::max_pool2d(x, 2, 2);
    for (const bool relu : {false, true}) {
      const auto got = serving::max_pool_2x2(x, relu);
      EXPECT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast));
      EXPECT_TRUE(torch::equal(got, relu ? torch::relu(pooled) : pooled)) << x.sizes() << " relu " << relu;
    }
  }
  // Too small for the window: an error, as from MaxPool2d, not an empty answer.
  EXPECT_THROW(serving::max_pool_2x2(torch::rand({1, 4, 1, 6}).contiguous(torch::MemoryFormat::ChannelsLast), true),
               c10::Error);
}

TEST(ServingKernels, PoolPropagatesNaNLikeLibTorch) {
  c10::InferenceMode inference;
  auto x = torch::full({1, 8, 4, 4}, -1.0F).contiguous(torch::MemoryFormat::ChannelsLast);
  x.index_put_({0, 3, 1, 0}, std::numeric_limits<float>::quiet_NaN());  // pixel (0, 0) of the output
  x.index_put_({0, 5, 3, 3}, std::numeric_limits<float>::quiet_NaN());  // pixel (1, 1)
  for (const bool relu : {false, true}) {
    const auto got = serving::max_pool_2x2(x, relu);
    EXPECT_TRUE(std::isnan(got.index({0, 3, 0, 0}).item<float>()));
    EXPECT_TRUE(std::isnan(got.index({0, 5, 1, 1}).item<float>()));
    EXPECT_EQ(got.isnan().sum().item<std::int64_t>(), 2);
    EXPECT_EQ(got.index({0, 0, 0, 0}).item<float>(), relu ? 0.0F : -1.0F);
  }
}

TEST(ServingKernels, SmallInputConvolutionLikeConv2d) {
  torch::manual_seed(6);
  c10::InferenceMode inference;
  struct Case {
    std::int64_t n, in, h, w, out, k, pad;
  };
  for (const Case c : {Case{8, 1, 28, 28, 32, 3, 1}, Case{3, 3, 32, 32, 32, 3, 1}, Case{2, 2, 9, 7, 5, 5, 2},
                       Case{2, 4, 6, 6, 17, 3, 0}, Case{1, 1, 3, 3, 8, 5, 1}}) {
    const auto weight = torch::randn({c.out, c.in, c.k, c.k});
    const auto bias = torch::randn({c.out});
    const auto taps = weight.reshape({c.out, -1}).t().contiguous();
    auto x = torch::randn({c.n, c.in, c.h, c.w});
    const auto expected = torch::conv2d(x, weight, bias, 1, c.pad);
    // NCHW, channels-last and a strided view all read alike.
    for (const auto& input : {x, x.contiguous(torch::MemoryFormat::ChannelsLast),
                              torch::randn({c.n, c.in, c.h, 2 * c.w}).slice(3, 0, 2 * c.w, 2).copy_(x)}) {
      const auto got = serving::small_input_conv(input, taps, bias, c.k, c.pad);
      ASSERT_EQ(got.sizes(), expected.sizes());
      EXPECT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast));
      EXPECT_LT((got - expected).abs().max().item<float>(), 1e-4F) << "in " << c.in << " k " << c.k << " pad " << c.pad;
    }
  }
}

TEST(ServingKernels, LinearLikeLibTorchForEveryBlockOfRows) {
  torch::manual_seed(7);
  c10::InferenceMode inference;
  for (const std::int64_t in : {3136, 128, 37, 5}) {
    const auto weight = torch::randn({19, in});
    const auto bias = torch::randn({19});
    for (const std::int64_t rows : {1, 3, 4, 8, 13, 16, 17}) {  // blocks of 8, 4 and single rows
      const auto x = torch::randn({rows, in});
      const auto expected = torch::nn::functional::linear(x, weight, bias);
      EXPECT_LT((serving::linear(x, weight, bias) - expected).abs().max().item<float>(), 2e-4F)
          << rows << " rows of " << in;
    }
  }
}

TEST(PrepareForServing, ReadsTheLastActivationsWithoutFlatteningThem) {
  // The first linear layer reads channels-last activations in their own order: the served
  // model must give the same answers for inputs whose flattened order differs from NCHW's.
  torch::manual_seed(8);
  auto model = torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 6, 1)), torch::nn::Flatten(),
                                     torch::nn::Linear(6 * 3 * 4, 5));
  model->eval();
  auto served = prepare_for_serving(model);
  c10::InferenceMode inference;
  const auto x = torch::randn({3, 8, 3, 4});
  const auto expected = model->forward(x);
  for (int repeat = 0; repeat < 2; ++repeat) {  // the reordered weight is made once, then reused
    EXPECT_LT((served->forward(x.contiguous(torch::MemoryFormat::ChannelsLast)) - expected).abs().max().item<float>(),
              1e-5F);
  }
  EXPECT_LT((served->forward(x) - expected).abs().max().item<float>(), 1e-5F);  // and NCHW input too
  const auto many = torch::randn({40, 8, 3, 4});  // more rows than serving::linear takes: OpenBLAS
  EXPECT_LT((served->forward(many.contiguous(torch::MemoryFormat::ChannelsLast)) - model->forward(many))
                .abs()
                .max()
                .item<float>(),
            1e-5F);
}

TEST(PrepareForServing, KeepsOneCopyOfALinearWeightInWhicheverOrderItIsRead) {
  // Flatten then Linear on the input itself: channels-last and NCHW batches alternate, and the
  // one weight kept is reordered back and forth between them; the answers never change.
  torch::manual_seed(9);
  auto model = torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Linear(6 * 3 * 4, 5));
  model->eval();
  auto served = prepare_for_serving(model);
  c10::InferenceMode inference;
  const auto x = torch::randn({3, 6, 3, 4});
  const auto expected = model->forward(x);
  for (int repeat = 0; repeat < 2; ++repeat) {
    EXPECT_LT((served->forward(x.contiguous(torch::MemoryFormat::ChannelsLast)) - expected).abs().max().item<float>(),
              1e-5F);
    EXPECT_LT((served->forward(x) - expected).abs().max().item<float>(), 1e-5F);
  }
  const auto y = torch::randn({2, 12, 3, 2});  // another shape of the same 72 values
  EXPECT_LT(
      (served->forward(y.contiguous(torch::MemoryFormat::ChannelsLast)) - model->forward(y)).abs().max().item<float>(),
      1e-5F);
  EXPECT_LT((served->forward(x.contiguous(torch::MemoryFormat::ChannelsLast)) - expected).abs().max().item<float>(),
            1e-5F);
}

}  // namespace
}  // namespace mlswarm
