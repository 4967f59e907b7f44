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

namespace {

/// Evaluation batches: small ones keep the activations in cache. On 2 CPU cores, a one-epoch job
/// of 512 images, mostly the evaluation of Fashion-MNIST's 10,000 test images, took 5.5 s in
/// batches of 128 against 11 s in batches of 1,000 (convnet, one thread), and 21 s against 37 s
/// (ResNet, two threads); 64 was no faster than 128 (bench_train_throughput).
constexpr std::int64_t kEvalBatch = 128;

}  // namespace

torch::Device pick_device(const std::string& wanted) {
  bool has_cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !has_cuda) {
    throw Error(ErrorCode::kInvalidArgument,
                "train_opts.device is \"cuda\" but this trainer has no CUDA device "
                "(LibTorch built without CUDA, or no GPU visible)",
                "train_opts.device");
  }
  return (wanted == "cuda" || (wanted == "auto" && has_cuda)) ? torch::Device(torch::kCUDA)
                                                              : torch::Device(torch::kCPU);
}

FastPath fast_path_for(const TrainingEnv& env, const torch::Device& device, const JobSpec& spec, bool bf16) {
  FastPath f;
  // Channels-last only pays for convolutions, and a data-parallel rank's gradients are views
  // into NCHW allreduce buckets.
  const bool layout_may_change = !(spec.placement && spec.placement->world_size > 1) && spec.model_type != "mlp";
  if (device.is_cuda()) {
    f.gpu_lacks_bf16 = env.cuda_fast_path && !bf16;
    f.amp = env.cuda_fast_path && bf16;
    f.channels_last = f.amp && layout_may_change;
  } else {
    f.channels_last = env.cpu_channels_last && layout_may_change;
  }
  return f;
}

FastPath fast_path_for(const TrainingEnv& env, const torch::Device& device, const JobSpec& spec) {
  const bool bf16 = device.is_cuda() && at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8();
  return fast_path_for(env, device, spec, bf16);
}

torch::Tensor in_layout(const torch::Tensor& x, bool channels_last) {
  if (x.dim() != 4) return x;
  const auto format = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  if (x.is_contiguous(format) && x.suggest_memory_format() == format) return x;
  return torch::empty_like(x, x.options(), format).copy_(x);
}

/// The training subset [start, end) of the train split.
std::pair<std::int64_t, std::int64_t> subset_of(const JobSpec& spec, const Dataset& data) {
  std::int64_t start = 0;
  std::int64_t end = data.train.count;
  if (spec.example_idxs) {
    start = spec.example_idxs->first;
    end = std::min(spec.example_idxs->second, data.train.count);
  }
  if (end - start < 2) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("example_idxs selects {} examples; training needs at least 2",
                            std::max<std::int64_t>(0, end - start)),
                "example_idxs");
  }
  return {start, end};
}

/// The evaluation range [start, end) of the test split: test_idxs, or all of it.
std::pair<std::int64_t, std::int64_t> test_range_of(const JobSpec& spec, const Dataset& data) {
  if (!spec.test_idxs) return {0, data.test.count};
  const std::int64_t start = std::min(spec.test_idxs->first, data.test.count);
  const std::int64_t end = std::min(spec.test_idxs->second, data.test.count);
  if (end <= start) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("test_idxs selects no example of the {}-image test split", data.test.count), "test_idxs");
  }
  return {start, end};
}

/// Per-channel mean and standard deviation of pixels scaled to 0..1.
void channel_stats(const Dataset& data, std::int64_t start, std::int64_t end, std::vector<double>& mean,
                   std::vector<double>& stdev) {
  const int c = data.info.channels;
  const std::int64_t plane = std::int64_t{data.info.height} * data.info.width;
  std::vector<double> sum(c, 0.0), sq(c, 0.0);
  for (std::int64_t i = start; i < end; ++i) {
    const std::uint8_t* img = data.train.images.data() + i * c * plane;
    for (int ch = 0; ch < c; ++ch) {
      std::uint64_t s = 0, q = 0;
      for (std::int64_t p = 0; p < plane; ++p) {
        std::uint32_t v = img[ch * plane + p];
        s += v;
        q += v * v;
      }
      sum[ch] += static_cast<double>(s);
      sq[ch] += static_cast<double>(q);
    }
  }
  const double n = static_cast<double>((end - start) * plane);
  mean.assign(c, 0.0);
  stdev.assign(c, 1.0);
  for (int ch = 0; ch < c; ++ch) {
    double m = sum[ch] / n / 255.0;
    double var = sq[ch] / n / (255.0 * 255.0) - m * m;
    mean[ch] = m;
    stdev[ch] = std::sqrt(std::max(var, 1e-6));
  }
}

/// Normalised images and labels of one split range, resident on `device`.
std::pair<torch::Tensor, torch::Tensor> resident_split(const DatasetSplit& split, const DatasetInfo& info,
                                                       std::int64_t start, std::int64_t end,
                                                       const std::vector<double>& mean,
                                                       const std::vector<double>& stdev, torch::Device device) {
  const std::int64_t chw = std::int64_t{info.channels} * info.height * info.width;
  auto bytes = torch::from_blob(const_cast<std::uint8_t*>(split.images.data()) + start * chw,
                                {end - start, info.channels, info.height, info.width}, torch::kUInt8);
  auto labels = torch::from_blob(const_cast<std::uint8_t*>(split.labels.data()) + start, {end - start}, torch::kUInt8);
  auto x = normalize_images(bytes.to(device), mean, stdev).contiguous();
  auto y = labels.to(device).to(torch::kInt64);
  return {x, y};
}

/// The untrained model a spec trains, shaped for its dataset.
torch::nn::Sequential model_for(const JobSpec& spec, const DatasetInfo& info) {
  return make_model(spec.model_type, info.channels, info.height, info.width, static_cast<int>(info.class_names.size()));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(torch::nn::Sequential& model, const TrainOpts& o) {
  if (o.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(model->parameters(),
                                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  }
  if (o.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(model->parameters(),
                                                torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(
      model->parameters(), torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
}

double scheduled_lr(const TrainOpts& o, std::int64_t global_step, std::int64_t total_steps) {
  if (o.lr_schedule == "constant" || total_steps <= 0) return o.lr;
  const double pi = 3.14159265358979323846;
  return o.lr * 0.5 * (1.0 + std::cos(pi * static_cast<double>(global_step) / static_cast<double>(total_steps)));
}

json resume_key(const JobSpec& spec) {
  json key = to_json(spec);
  key.erase("job_id");
  key["train_opts"].erase("device");
  key["train_opts"].erase("checkpoint_every_steps");
  // The global batch makes a run independent of how many trainers share it, so a job resumes
  // on however many are free.
  key.erase("trainers");
  key.erase("min_trainers");
  key.erase("placement");
  return key;
}

std::string encode_checkpoint(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer, const JobSpec& spec,
                              const ResumePoint& point) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive;
  model->save(model_archive);
  archive.write("model", model_archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  json history = json::array();
  for (const auto& e : point.history) {
    history.push_back({e.epoch, e.train_loss, e.test_loss, e.accuracy, e.images_per_s, e.duration_s});
  }
  json state = {{"job_id", spec.job_id},        {"attempt", spec.attempt}, {"next_epoch", point.next_epoch},
                {"next_step", point.next_step}, {"history", history},      {"resume_key", resume_key(spec)}};
  if (point.unevaluated) {
    const EpochMetrics& e = *point.unevaluated;
    state["unevaluated"] = {e.epoch, e.train_loss, e.images_per_s, e.duration_s};
  }
  archive.write("state", c10::IValue(state.dump()));
  std::ostringstream out;
  archive.save_to(out);
  return std::move(out).str();
}

std::optional<ResumePoint> decode_checkpoint(const std::string& payload, const std::string& what, const JobSpec& spec,
                                             torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                                             torch::Device device) {
  std::istringstream in(payload);
  torch::serialize::InputArchive archive;
  archive.load_from(in, device);
  c10::IValue state_value;
  archive.read("state", state_value);
  json state = json::parse(state_value.toStringRef());
  if (state.at("resume_key") != resume_key(spec)) {
    spdlog::warn("job {}: checkpoint {} is for a different spec; starting from scratch", spec.job_id, what);
    return std::nullopt;
  }
  torch::serialize::InputArchive model_archive;
  archive.read("model", model_archive);
  model->load(model_archive);
  torch::serialize::InputArchive optimizer_archive;
  archive.read("optimizer", optimizer_archive);
  optimizer.load(optimizer_archive);
  ResumePoint point;
  point.next_epoch = static_cast<int>(checked_int(state.at("next_epoch"), 1, spec.train_opts.epochs + 1, "next_epoch"));
  point.next_step = static_cast<int>(checked_int(state.at("next_step"), 0, 1 << 30, "next_step"));
  for (const auto& e : state.at("history")) {
    point.history.push_back({static_cast<int>(checked_int(e.at(0), 1, spec.train_opts.epochs, "history epoch")),
                             e.at(1).get<double>(), e.at(2).get<double>(), e.at(3).get<double>(), e.at(4).get<double>(),
                             e.at(5).get<double>()});
  }
  if (state.contains("unevaluated")) {
    const json& e = state.at("unevaluated");
    EpochMetrics m;
    const int last = std::min(point.next_epoch, spec.train_opts.epochs);
    m.epoch = static_cast<int>(checked_int(e.at(0), point.next_epoch, last, "unevaluated epoch"));
    m.train_loss = e.at(1).get<double>();
    m.images_per_s = e.at(2).get<double>();
    m.duration_s = e.at(3).get<double>();
    point.unevaluated = m;
  }
  return point;
}

torch::Tensor augment_batch(const torch::Tensor& x, const TrainOpts& o, int epoch, int step, std::int64_t first,
                            std::int64_t count) {
  if ((o.augment != "crop_flip" && o.augment != "flip") || count <= 0) return x;
  constexpr std::int64_t kPad = 4;
  // Drawn for the whole global batch from (seed, epoch, step), then this rank's rows taken:
  // the same images get the same crops and flips however many trainers share the batch.
  auto generator = at::make_generator<at::CPUGeneratorImpl>(
      o.seed * 7919ULL + static_cast<std::uint64_t>(epoch) * 1000003ULL + static_cast<std::uint64_t>(step));
  const std::int64_t global = first + count;
  // One draw per image (a row of three numbers in 0..17, uniform modulo 9 and modulo 2), so
  // image i's draw does not depend on how many images follow it.
  auto draws = torch::randint(0, 18, {global, 3}, generator, torch::kInt64).slice(0, first, global);
  const auto device = x.device();
  auto shifts = o.augment == "flip" ? torch::full({count, 2}, kPad, torch::kInt64).to(device)  // the image itself
                                    : draws.slice(1, 0, 2).remainder(2 * kPad + 1).to(device);
  auto flips = draws.select(1, 2).remainder(2).to(device).to(torch::kBool);
  const std::int64_t h = x.size(2), w = x.size(3);
  auto padded = torch::constant_pad_nd(x, {kPad, kPad, kPad, kPad}, 0.0);
  auto ints = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto rows = shifts.select(1, 0).unsqueeze(1) + torch::arange(h, ints).unsqueeze(0);  // [B][H]
  auto cols = shifts.select(1, 1).unsqueeze(1) + torch::arange(w, ints).unsqueeze(0);  // [B][W]
  cols = torch::where(flips.unsqueeze(1), cols.flip(1), cols);  // a mirrored crop reads its columns backwards
  auto batch = torch::arange(x.size(0), ints).view({-1, 1, 1});
  using torch::indexing::Slice;
  // Advanced indices around a slice put their dimensions first: [B][H][W][C] -> [B][C][H][W].
  auto out = padded.index({batch, Slice(), rows.unsqueeze(2), cols.unsqueeze(1)});
  return out.permute({0, 3, 1, 2}).contiguous();
}

bool is_best_epoch(const std::vector<double>& earlier, double accuracy) {
  return std::all_of(earlier.begin(), earlier.end(), [&](double a) { return accuracy > a; });
}

bool should_stop_early(const std::vector<double>& accuracies, int patience) {
  if (patience <= 0 || accuracies.size() <= static_cast<std::size_t>(patience)) return false;
  const auto best = std::max_element(accuracies.begin(), accuracies.end());  // the first of equals
  return accuracies.end() - best > patience;
}

Evaluation evaluation_of(const EvaluationSums& sums) {
  Evaluation e{sums.loss_sum / sums.count, sums.correct / sums.count, {}};
  for (double v : sums.confusion) e.confusion.push_back(static_cast<std::int64_t>(std::llround(v)));
  return e;
}

std::optional<Evaluation> evaluate(torch::nn::Sequential& model, const torch::Tensor& x, const torch::Tensor& y,
                                   const std::function<bool()>& stop) {
  auto sums = evaluate_sums(model, x, y, stop);
  if (!sums) return std::nullopt;
  return evaluation_of(*sums);
}

std::optional<EvaluationSums> evaluate_sums(torch::nn::Sequential& model, const torch::Tensor& x,
                                            const torch::Tensor& y, const std::function<bool()>& stop) {
  torch::NoGradGuard no_grad;
  model->eval();
  auto loss_sum = torch::zeros({}, x.options());
  auto correct = torch::zeros({}, y.options());
  torch::Tensor confusion;
  const std::int64_t n = x.size(0);
  for (std::int64_t i = 0; i < n; i += kEvalBatch) {
    if (i > 0 && stop && stop()) {
      model->train();
      return std::nullopt;
    }
    auto xb = x.slice(0, i, std::min(n, i + kEvalBatch));
    auto yb = y.slice(0, i, std::min(n, i + kEvalBatch));
    auto logits = model->forward(xb);
    loss_sum += torch::nn::functional::cross_entropy(
        logits, yb, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    const auto predicted = logits.argmax(1);
    correct += predicted.eq(yb).sum();
    const std::int64_t k = logits.size(1);
    const auto cells = torch::bincount(yb.to(torch::kInt64) * k + predicted, {}, k * k);
    confusion = confusion.defined() ? confusion + cells : cells;
  }
  model->train();
  EvaluationSums sums{
      loss_sum.item<double>(), static_cast<double>(correct.item<std::int64_t>()), static_cast<double>(n), {}};
  if (confusion.defined()) {
    confusion = confusion.to(torch::kCPU).to(torch::kFloat64).contiguous();
    sums.confusion.assign(confusion.data_ptr<double>(), confusion.data_ptr<double>() + confusion.numel());
  }
  return sums;
}

}  // namespace mlswarm
