// The model, the optimiser and the learning-rate schedule of a job.

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

/// The untrained model a spec trains, shaped for its dataset.
torch::nn::Sequential model_for(const JobSpec& spec, const DatasetInfo& info) {
  return make_model(spec.model_type, info.channels, info.height, info.width, static_cast<int>(info.class_names.size()));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(torch::nn::Sequential& model, const TrainOpts& o) {
  if (o.optimizer == Optimizer::kAdamW) {
    return std::make_unique<torch::optim::AdamW>(model->parameters(),
                                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  }
  if (o.optimizer == Optimizer::kAdam) {
    return std::make_unique<torch::optim::Adam>(model->parameters(),
                                                torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(
      model->parameters(), torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
}

double scheduled_lr(const TrainOpts& o, std::int64_t global_step, std::int64_t total_steps) {
  if (o.lr_schedule == LrSchedule::kConstant || total_steps <= 0) return o.lr;
  const double pi = 3.14159265358979323846;
  return o.lr * 0.5 * (1.0 + std::cos(pi * static_cast<double>(global_step) / static_cast<double>(total_steps)));
}

}  // namespace mlswarm
