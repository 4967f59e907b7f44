#include "training.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <sstream>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/dataset_cache.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/attempt_fence.h"
#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/metrics.h"
#include "mlswarm/model_meta.h"
#include "mlswarm/torch/model_zoo.h"

namespace mlswarm {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr std::int64_t kEvalBatch = 1000;
constexpr double kReportEverySeconds = 0.5;

/// torch::manual_seed is process-global; jobs on other workers must not interleave with
/// the seeding and the initialisation it is for.
std::mutex g_init_mutex;

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

/// Per-channel mean and standard deviation of pixels scaled to 0..1.
void channel_stats(const Dataset& data, std::int64_t start, std::int64_t end,
                   std::vector<double>& mean, std::vector<double>& stdev) {
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
                                                       const std::vector<double>& stdev,
                                                       torch::Device device) {
  const std::int64_t chw = std::int64_t{info.channels} * info.height * info.width;
  auto bytes = torch::from_blob(const_cast<std::uint8_t*>(split.images.data()) + start * chw,
                                {end - start, info.channels, info.height, info.width}, torch::kUInt8);
  auto labels = torch::from_blob(const_cast<std::uint8_t*>(split.labels.data()) + start, {end - start},
                                 torch::kUInt8);
  auto x = normalize_images(bytes.to(device), mean, stdev).contiguous();
  auto y = labels.to(device).to(torch::kInt64);
  return {x, y};
}

/// The untrained model a spec trains, shaped for its dataset.
torch::nn::Sequential model_for(const JobSpec& spec, const DatasetInfo& info) {
  return make_model(spec.model_type, info.channels, info.height, info.width, static_cast<int>(info.class_names.size()));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(torch::nn::Sequential& model,
                                                        const TrainOpts& o) {
  if (o.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(
        model->parameters(), torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(
      model->parameters(),
      torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
}

double scheduled_lr(const TrainOpts& o, std::int64_t global_step, std::int64_t total_steps) {
  if (o.lr_schedule == "constant" || total_steps <= 0) return o.lr;
  const double pi = 3.14159265358979323846;
  return o.lr * 0.5 * (1.0 + std::cos(pi * static_cast<double>(global_step) / static_cast<double>(total_steps)));
}

/// The spec fields a checkpoint must agree with to be resumed.
json resume_key(const JobSpec& spec) {
  json key = to_json(spec);
  key.erase("job_id");
  key["train_opts"].erase("device");
  key["train_opts"].erase("checkpoint_every_steps");
  return key;
}

struct ResumePoint {
  int next_epoch = 1;
  int next_step = 0;
  std::vector<EpochMetrics> history;
};

std::string save_checkpoint(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                            const JobSpec& spec, const ResumePoint& point) {
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
  json state = {{"job_id", spec.job_id},
                {"attempt", spec.attempt},
                {"next_epoch", point.next_epoch},
                {"next_step", point.next_step},
                {"history", history},
                {"resume_key", resume_key(spec)}};
  archive.write("state", c10::IValue(state.dump()));
  std::ostringstream out;
  archive.save_to(out);
  return std::move(out).str();
}

/// Replaces checkpoint.pt, keeping the one before as checkpoint.prev.pt: a crash at any
/// point leaves at least one complete, sealed checkpoint.
void write_checkpoint_files(const std::filesystem::path& path, const std::string& bytes) {
  const auto started = Clock::now();
  std::filesystem::path previous = path;
  previous.replace_filename("checkpoint.prev.pt");
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) std::filesystem::rename(path, previous, ec);
  write_file_atomic(path, seal(bytes));
  Metrics::global().observe("mlswarm_checkpoint_write_seconds", {},
                            std::chrono::duration<double>(Clock::now() - started).count());
}

/// Loads sealed checkpoint bytes into model and optimiser. Throws (Error, c10::Error,
/// json errors) when they are not an intact checkpoint; nullopt when it is for another spec.
std::optional<ResumePoint> resume_from_bytes(std::string_view sealed, const std::string& what, const JobSpec& spec,
                                             torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                                             torch::Device device) {
  // Unsealing checks length and CRC before anything touches the model.
  std::string bytes = unseal(sealed, what);
  std::istringstream in(bytes);
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
                             e.at(1).get<double>(), e.at(2).get<double>(),
                             e.at(3).get<double>(), e.at(4).get<double>(), e.at(5).get<double>()});
  }
  return point;
}

/// Loads a checkpoint into model and optimiser when it is intact and for this spec.
std::optional<ResumePoint> try_resume_from(const std::filesystem::path& path, const JobSpec& spec,
                                           torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                                           torch::Device device) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec) || std::filesystem::is_symlink(path, ec)) return std::nullopt;
  try {
    return resume_from_bytes(read_file(path, std::size_t{4} << 30), path.string(), spec, model, optimizer, device);
  } catch (const std::exception& e) {
    spdlog::warn("job {}: checkpoint {} unusable ({})", spec.job_id, path.string(), e.what());
    return std::nullopt;
  }
}

/// The newest usable checkpoint of the job: checkpoint.pt, else checkpoint.prev.pt.
std::optional<ResumePoint> try_resume(const std::filesystem::path& path, const JobSpec& spec,
                                      torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                                      torch::Device device) {
  if (auto point = try_resume_from(path, spec, model, optimizer, device)) return point;
  std::filesystem::path previous = path;
  previous.replace_filename("checkpoint.prev.pt");
  return try_resume_from(previous, spec, model, optimizer, device);
}

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};

Evaluation evaluate(torch::nn::Sequential& model, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  model->eval();
  auto loss_sum = torch::zeros({}, x.options());
  auto correct = torch::zeros({}, y.options());
  const std::int64_t n = x.size(0);
  for (std::int64_t i = 0; i < n; i += kEvalBatch) {
    auto xb = x.slice(0, i, std::min(n, i + kEvalBatch));
    auto yb = y.slice(0, i, std::min(n, i + kEvalBatch));
    auto logits = model->forward(xb);
    loss_sum += torch::nn::functional::cross_entropy(
        logits, yb, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    correct += logits.argmax(1).eq(yb).sum();
  }
  model->train();
  return {loss_sum.item<double>() / static_cast<double>(n),
          static_cast<double>(correct.item<std::int64_t>()) / static_cast<double>(n)};
}

TrainingOutcome train(const JobSpec& spec, const TrainingEnv& env, const TrainingHooks& hooks) {
  const TrainOpts& o = spec.train_opts;
  torch::Device device = pick_device(o.device);
  const std::string device_name = device.is_cuda() ? "cuda" : "cpu";
  auto data = env.datasets->get(spec.dataset);
  const DatasetInfo& info = data->info;
  auto [start, end] = subset_of(spec, *data);

  ModelMeta meta;
  meta.model_id = spec.model_id;
  meta.model_type = spec.model_type;
  meta.dataset = spec.dataset;
  meta.class_names = info.class_names;
  meta.channels = info.channels;
  meta.height = info.height;
  meta.width = info.width;
  meta.job_id = spec.job_id;
  meta.spec = to_json(spec);
  channel_stats(*data, start, end, meta.mean, meta.std);

  auto [train_x, train_y] = resident_split(data->train, info, start, end, meta.mean, meta.std, device);
  auto [test_x, test_y] = resident_split(data->test, info, 0, data->test.count, meta.mean, meta.std, device);
  const std::int64_t n = end - start;
  const std::int64_t bs = std::min<std::int64_t>(o.batch_size, n);
  // A last batch of one sample would break batch norm; it is dropped.
  const int steps_per_epoch = static_cast<int>(n / bs + ((n % bs) >= 2 ? 1 : 0));
  const std::int64_t total_steps = std::int64_t{steps_per_epoch} * o.epochs;

  torch::nn::Sequential model;
  {
    std::lock_guard lock(g_init_mutex);
    torch::manual_seed(o.seed);
    model = model_for(spec, info);
  }
  model->to(device);
  model->train();
  auto optimizer = make_optimizer(model, o);

  const auto job_path = job_dir(env.home_dir, spec.job_id);
  const auto checkpoint_path = job_path / "checkpoint.pt";
  const auto model_path = model_dir(env.home_dir, spec.model_id);
  // Every write below happens under the job's fence: once a later attempt has claimed the
  // job, nothing of this one lands.
  const AttemptFence fence(job_path, spec.attempt);
  fence.claim();
  ResumePoint point;
  if (auto resumed = try_resume(checkpoint_path, spec, model, *optimizer, device)) {
    point = std::move(*resumed);
    spdlog::info("job {} model {}: resuming from checkpoint at epoch {} step {}", spec.job_id,
                 spec.model_id, point.next_epoch, point.next_step);
  }
  meta.epochs = point.history;
  if (point.next_step >= steps_per_epoch) {
    ++point.next_epoch;
    point.next_step = 0;
  }

  auto checkpoint_bytes = [&](int next_epoch, int next_step) {
    point.next_epoch = next_epoch;
    point.next_step = next_step;
    point.history = meta.epochs;
    return save_checkpoint(model, *optimizer, spec, point);
  };
  auto write_checkpoint = [&](int next_epoch, int next_step) {
    const std::string bytes = checkpoint_bytes(next_epoch, next_step);
    fence.guarded([&] { write_checkpoint_files(checkpoint_path, bytes); });
  };

  spdlog::info("job {} model {}: training {} on {} [{}, {}) for {} epochs, batch {}, {} steps/epoch, {}",
               spec.job_id, spec.model_id, spec.model_type, spec.dataset, start, end, o.epochs, bs,
               steps_per_epoch, device_name);

  for (int epoch = point.next_epoch; epoch <= o.epochs; ++epoch) {
    int first_step = epoch == point.next_epoch ? point.next_step : 0;
    // The shuffle of epoch e depends only on (seed, e): a resumed job sees the same order.
    auto generator = at::make_generator<at::CPUGeneratorImpl>(o.seed * 1000003ULL + static_cast<std::uint64_t>(epoch));
    auto order = torch::randperm(n, generator, torch::TensorOptions().dtype(torch::kInt64)).to(device);
    auto loss_sum = torch::zeros({}, train_x.options());
    std::int64_t images = 0;
    const auto epoch_start = Clock::now();
    auto last_report = epoch_start;

    auto progress_at = [&](int step) {
      TrainingProgress p;
      p.epoch = epoch;
      p.step = step;
      p.steps_per_epoch = steps_per_epoch;
      p.progress = static_cast<double>(std::int64_t{epoch - 1} * steps_per_epoch + step) /
                   static_cast<double>(total_steps);
      p.loss = images > 0 ? loss_sum.item<double>() / static_cast<double>(images) : 0.0;
      double secs = std::chrono::duration<double>(Clock::now() - epoch_start).count();
      p.images_per_s = secs > 0 ? static_cast<double>(images) / secs : 0.0;
      p.device = device_name;
      return p;
    };

    for (int step = first_step; step < steps_per_epoch; ++step) {
      if (hooks.should_stop && hooks.should_stop()) {
        write_checkpoint(epoch, step);
        spdlog::info("job {} model {}: stopped at epoch {} step {}; checkpoint written", spec.job_id,
                     spec.model_id, epoch, step);
        return TrainingOutcome::kStopped;
      }
      const std::int64_t lo = std::int64_t{step} * bs;
      const std::int64_t hi = std::min(n, lo + bs);
      auto idx = order.slice(0, lo, hi);
      auto xb = train_x.index_select(0, idx);
      auto yb = train_y.index_select(0, idx);
      double lr = scheduled_lr(o, std::int64_t{epoch - 1} * steps_per_epoch + step, total_steps);
      for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
      optimizer->zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(xb), yb);
      loss.backward();
      optimizer->step();
      loss_sum += loss.detach() * static_cast<double>(hi - lo);
      images += hi - lo;

      if (o.checkpoint_every_steps > 0 && (step + 1) % o.checkpoint_every_steps == 0 &&
          step + 1 < steps_per_epoch) {
        write_checkpoint(epoch, step + 1);
      }
      auto now = Clock::now();
      if (hooks.report && std::chrono::duration<double>(now - last_report).count() >= kReportEverySeconds) {
        last_report = now;
        hooks.report(progress_at(step + 1));
      }
    }
    TrainingProgress done = progress_at(steps_per_epoch);
    const double epoch_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    Evaluation eval = evaluate(model, test_x, test_y);
    done.accuracy = eval.accuracy;

    meta.epochs.push_back({epoch, done.loss, eval.loss, eval.accuracy, done.images_per_s, epoch_seconds});
    meta.version = epoch;
    meta.attempt = spec.attempt;
    meta.updated_at = unix_now();
    const std::string weights = save_module(model);
    meta.model_crc32 = crc32_of(weights);
    const std::string checkpoint = checkpoint_bytes(epoch + 1, 0);
    fence.guarded([&] {
      write_file_atomic(model_path / "model.pt", weights);
      write_file_atomic(model_path / "meta.json", to_json(meta).dump(2));
      write_checkpoint_files(checkpoint_path, checkpoint);
    });
    spdlog::info("job {} model {}: epoch {}/{} loss {:.4f} test loss {:.4f} accuracy {:.4f} {:.0f} images/s",
                 spec.job_id, spec.model_id, epoch, o.epochs, done.loss, eval.loss, eval.accuracy,
                 done.images_per_s);
    if (hooks.report) hooks.report(done);
  }
  return TrainingOutcome::kCompleted;
}

}  // namespace

TrainingOutcome run_training(const JobSpec& spec, const TrainingEnv& env, const TrainingHooks& hooks) {
  Metrics::global().describe("mlswarm_checkpoint_write_seconds", "histogram",
                             "time to serialise, seal, write and fsync one checkpoint");
  try {
    return train(spec, env, hooks);
  } catch (const c10::OutOfMemoryError& e) {
    throw Error(ErrorCode::kOutOfMemory, fmt::format("LibTorch: {}", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kInternal, fmt::format("LibTorch: {}", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::kOutOfMemory, "out of memory");
  }
}

void set_training_threads(int threads) {
  int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
}

std::string best_device() { return torch::cuda::is_available() ? "cuda" : "cpu"; }

double resident_batch_images_per_s(const JobSpec& spec, const TrainingEnv& env, int steps) {
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
  model->train();
  auto optimizer = make_optimizer(model, o);
  auto loss_sum = torch::zeros({}, x.options());
  auto step_once = [&] {
    optimizer->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
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
  return seal(save_checkpoint(model, *optimizer, spec, point));
}

std::optional<int> checkpoint_resume_epoch(std::string_view sealed, const JobSpec& spec) {
  const DatasetInfo* info = find_dataset_info(spec.dataset);
  if (info == nullptr) return std::nullopt;
  try {
    torch::nn::Sequential model = model_for(spec, *info);
    auto optimizer = make_optimizer(model, spec.train_opts);
    auto point = resume_from_bytes(sealed, "checkpoint", spec, model, *optimizer, torch::kCPU);
    if (!point) return std::nullopt;
    return point->next_epoch;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace mlswarm
