// What benchmarks and fuzz targets need from the training code, apart from the loop itself.

#include <chrono>

#include "mlswarm/atomic_file.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/error.h"
#include "mlswarm/torch/model_zoo.h"
#include "training.h"
#include "training_parts.h"

namespace mlswarm {

double resident_batch_images_per_s(const JobSpec& spec, const TrainingEnv& env, int steps) {
  using Clock = std::chrono::steady_clock;
  const TrainOpts& o = spec.train_opts;
  torch::Device device = pick_device(o.device);
  auto data = env.datasets->get(spec.dataset);
  const DatasetInfo& info = data->info;
  std::vector<double> mean, stdev;
  channel_stats(*data, 0, o.batch_size, mean, stdev);
  // Named tensors, not a structured binding: the lambda below captures them, and clang
  // builds this file as C++17 for the fuzz targets (LibTorch 1.13's headers fail in C++20).
  torch::Tensor x;
  torch::Tensor y;
  std::tie(x, y) = resident_split(data->train, info, 0, o.batch_size, mean, stdev, device);
  torch::manual_seed(o.seed);
  auto model = model_for(spec, info);
  model->to(device);
  const FastPath fast = fast_path_for(env, device, spec);  // as the trainer's loop
  if (fast.channels_last) use_channels_last(*model);
  x = in_layout(x, fast.channels_last);
  model->train();
  auto optimizer = make_optimizer(model, o);
  auto loss_sum = torch::zeros({}, x.options());
  auto step_once = [&] {
    optimizer->zero_grad();
    torch::Tensor loss;
    {
      CudaAutocast autocast(fast.amp);
      loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    }
    loss.backward();
    optimizer->step();
    loss_sum += loss.detach();
  };
  for (int i = 0; i < 5; ++i) step_once();  // warm-up
  loss_sum.item<double>();
  auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) step_once();
  loss_sum.item<double>();  // waits for the device
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  return static_cast<double>(steps) * static_cast<double>(o.batch_size) / secs;
}

std::string fresh_checkpoint(const JobSpec& spec, int next_epoch) {
  const DatasetInfo* info = find_dataset_info(spec.dataset);
  if (info == nullptr) throw Error(ErrorCode::kInvalidArgument, "unknown dataset", "dataset");
  torch::nn::Sequential model = model_for(spec, *info);
  auto optimizer = make_optimizer(model, spec.train_opts);
  ResumePoint point;
  point.next_epoch = next_epoch;
  return seal(encode_checkpoint(model, *optimizer, spec, point));
}

std::optional<int> checkpoint_resume_epoch(std::string_view sealed, const JobSpec& spec) {
  const DatasetInfo* info = find_dataset_info(spec.dataset);
  if (info == nullptr) return std::nullopt;
  try {
    // Unsealing checks length and CRC before anything touches the model.
    const std::string payload = unseal(sealed, "checkpoint");
    torch::nn::Sequential model = model_for(spec, *info);
    auto optimizer = make_optimizer(model, spec.train_opts);
    auto point = decode_checkpoint(payload, "checkpoint", spec, model, *optimizer, torch::kCPU);
    if (!point) return std::nullopt;
    return point->next_epoch;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace mlswarm
