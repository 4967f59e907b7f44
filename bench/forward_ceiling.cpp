// The forward-pass ceiling of a trained model: normalisation, forward and softmax on a batch
// already in memory, as the batcher runs them, with no HTTP, parsing or copies. What serving
// could reach if nothing but the model cost anything: as saved (NCHW, batch norm layers) and
// as serving runs it (batch norm folded into the convolutions, channels-last). bench/predict.sh prints it
// beside the servers' requests/s.

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "mlswarm/allocator.h"
#include "mlswarm/model_meta.h"
#include "mlswarm/torch/model_zoo.h"
#include "serving_model.h"

int main(int argc, char** argv) {
  std::string home_dir, model_id = "bench";
  std::vector<int> batches{1, 8, 16, 32};
  int threads = 0;
  double seconds = 2;
  CLI::App app{"forward-pass ceiling of a served model"};
  app.add_option("--home-dir", home_dir, "HOME_DIR holding models/<id>")->required();
  app.add_option("--model-id", model_id)->capture_default_str();
  app.add_option("--batches", batches, "batch sizes")->delimiter(',')->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads, 0 = one per core")->capture_default_str();
  app.add_option("--seconds", seconds, "per batch size")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::cerr << mlswarm::tune_allocator_for_tensors() << " (as ml_controller)\n";
  if (threads > 0) torch::set_num_threads(threads);

  mlswarm::ModelMeta meta;
  torch::nn::Sequential nchw = mlswarm::load_trained_model(home_dir, model_id, &meta);
  torch::nn::Sequential served = mlswarm::prepare_for_serving(mlswarm::load_trained_model(home_dir, model_id, &meta));
  const auto c = static_cast<std::int64_t>(meta.channels);
  torch::Tensor mean = torch::tensor(std::vector<float>(meta.mean.begin(), meta.mean.end())).view({1, c, 1, 1});
  torch::Tensor std = torch::tensor(std::vector<float>(meta.std.begin(), meta.std.end())).view({1, c, 1, 1});
  c10::InferenceMode inference;  // as the batcher: no autograd bookkeeping at all
  for (const bool last : {false, true}) {
    torch::nn::Sequential model = last ? served : nchw;
    for (int batch : batches) {
      torch::Tensor pixels = torch::rand({batch, c, meta.height, meta.width});
      auto pass = [&] {
        auto x = pixels.sub(mean).div_(std);
        if (last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
        return torch::softmax(model->forward(x), 1).argmax(1);
      };
      for (int i = 0; i < 20; ++i) pass();  // warm-up: allocator, thread team
      std::int64_t images = 0;
      const auto start = std::chrono::steady_clock::now();
      double elapsed = 0;
      while (elapsed < seconds) {
        pass();
        images += batch;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      std::cout
          << fmt::format(
                 R"({{"layout": "{}", "batch": {}, "images_per_s": {:.0f}, "ms_per_pass": {:.3f}, "threads": {}}})",
                 last ? "served" : "as saved", batch, images / elapsed, 1000.0 * elapsed * batch / images,
                 torch::get_num_threads())
          << std::endl;
    }
  }
  return 0;
}
