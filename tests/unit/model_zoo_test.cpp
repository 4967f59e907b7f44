// The model as served (prepare_for_serving) against the model as trained, in eval mode.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "mlswarm/torch/model_zoo.h"

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

void expect_served_like_trained(const std::string& model_type, int channels, int height, int width) {
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
        << model_type << " " << channels << "x" << height << "x" << width << " batch " << batch;
    EXPECT_TRUE(torch::equal(got.argmax(1), expected.argmax(1)));
  }
}

TEST(PrepareForServing, GivesTheTrainedModelsProbabilities) {
  expect_served_like_trained("convnet", 1, 28, 28);
  expect_served_like_trained("convnet", 3, 32, 32);
  expect_served_like_trained("convnet", 1, 27, 29);  // odd sizes: pooling drops the last row and column
  expect_served_like_trained("resnet", 1, 28, 28);
  expect_served_like_trained("resnet", 3, 32, 32);
  expect_served_like_trained("mlp", 1, 28, 28);
}

TEST(PrepareForServing, PoolsAndActivatesChannelsLast) {
  auto model = make_model("convnet", 1, 28, 28, 10);
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

}  // namespace
}  // namespace mlswarm
