#pragma once

// The LibTorch building blocks of a training run: device choice, the resident data, the
// model and optimiser, the learning-rate schedule, evaluation, and the checkpoint payload.
// Includes LibTorch: only for the trainer's LibTorch translation units (trainer_training,
// trainer/training/); everything else uses training.h.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include "mlswarm/dataset.h"
#include "mlswarm/job.h"
#include "mlswarm/model_meta.h"
#include "training.h"

namespace mlswarm {

/// The device a job asked for. Throws Error(kInvalidArgument) for "cuda" without one.
torch::Device pick_device(TrainDevice wanted);

/// What a training loop does beyond fp32 NCHW on its device.
struct FastPath {
  bool amp = false;             ///< bf16 autocast over the forward pass and the loss
  bool channels_last = false;   ///< channels-last weights and batches
  bool gpu_lacks_bf16 = false;  ///< wanted on a GPU older than Ampere: fp32 there
};

/// On a CUDA device with env.cuda_fast_path (TRAIN_AMP) whose GPU computes in bf16 (`bf16`:
/// compute capability 8 or more, with cuDNN): bf16 autocast, and channels-last for a job on
/// one trainer (a data-parallel rank keeps NCHW: its gradients are views into the allreduce
/// buckets). On an older GPU, where bf16 convolutions are slow or missing: neither. On the CPU:
/// never autocast; channels-last for a job on one trainer with env.cpu_channels_last. Never
/// channels-last for the mlp, which has no convolutions.
FastPath fast_path_for(const TrainingEnv& env, const torch::Device& device, const JobSpec& spec, bool bf16);
/// The same for this process's GPU (asks LibTorch's CUDA hooks; false without CUDA).
FastPath fast_path_for(const TrainingEnv& env, const torch::Device& device, const JobSpec& spec);

/// `x` with the strides of NCHW or of channels-last. For one channel both formats call the
/// same bytes contiguous, and LibTorch picks a convolution's layout from the strides: this makes
/// them explicit (a crop_flip batch came out channels-last, a plain one NCHW).
torch::Tensor in_layout(const torch::Tensor& x, bool channels_last);

/// The training subset [start, end) of the train split (example_idxs, clipped). Throws
/// Error(kInvalidArgument) when it holds fewer than 2 examples.
std::pair<std::int64_t, std::int64_t> subset_of(const JobSpec& spec, const Dataset& data);
/// The evaluation range [start, end) of the test split: spec.test_idxs, or the whole split.
/// Throws Error(kInvalidArgument, "test_idxs") when it selects nothing of the loaded split.
std::pair<std::int64_t, std::int64_t> test_range_of(const JobSpec& spec, const Dataset& data);

/// Per-channel mean and standard deviation of the subset's pixels scaled to 0..1.
void channel_stats(const Dataset& data, std::int64_t start, std::int64_t end, std::vector<double>& mean,
                   std::vector<double>& stdev);

/// Normalised images and labels of one split range, resident on `device`.
std::pair<torch::Tensor, torch::Tensor> resident_split(const DatasetSplit& split, const DatasetInfo& info,
                                                       std::int64_t start, std::int64_t end,
                                                       const std::vector<double>& mean,
                                                       const std::vector<double>& stdev, torch::Device device);

/// The untrained model a spec trains, shaped for its dataset.
torch::nn::Sequential model_for(const JobSpec& spec, const DatasetInfo& info);
std::unique_ptr<torch::optim::Optimizer> make_optimizer(torch::nn::Sequential& model, const TrainOpts& o);
/// The learning rate at a global step (cosine to 0 over the job, or constant).
double scheduled_lr(const TrainOpts& o, std::int64_t global_step, std::int64_t total_steps);

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  /// K*K counts on the test split: row = the true class, column = the predicted one.
  std::vector<std::int64_t> confusion;
};
/// Mean loss and accuracy over (x, y), in eval mode, in batches of 128; back in train mode after.
/// `stop`, when given, is polled between batches (not before the first): nullopt when it says so.
std::optional<Evaluation> evaluate(torch::nn::Sequential& model, const torch::Tensor& x, const torch::Tensor& y,
                                   const std::function<bool()>& stop = {});
/// The sums behind an Evaluation, to add up over the shards of several ranks.
struct EvaluationSums {
  double loss_sum = 0;
  double correct = 0;
  double count = 0;
  std::vector<double> confusion;  ///< K*K, row-major (true, predicted)
};
/// An Evaluation from its sums (over one rank, or added up over all).
Evaluation evaluation_of(const EvaluationSums& sums);
std::optional<EvaluationSums> evaluate_sums(torch::nn::Sequential& model, const torch::Tensor& x,
                                            const torch::Tensor& y, const std::function<bool()>& stop = {});

/// train_opts.augment "crop_flip" on `x` [count][C][H][W], the rows [first, first + count) of a
/// global batch: random crops of the images padded by 4 pixels and left-right flips, on x's
/// device, each image's drawn from (seed, epoch, step, its row), so a data-parallel rank's
/// share is augmented as the same rows are on one trainer. `x` itself without augmentation.
torch::Tensor augment_batch(const torch::Tensor& x, const TrainOpts& o, int epoch, int step, std::int64_t first,
                            std::int64_t count);

/// Whether `accuracy` beats every earlier epoch's (strictly; the first epoch always does).
bool is_best_epoch(const std::vector<double>& earlier, double accuracy);
/// Early stopping: whether the last `patience` epochs of `accuracies` brought nothing better
/// than the best before them. Never with patience 0.
bool should_stop_early(const std::vector<double>& accuracies, int patience);

/// Where a checkpoint resumes, and the metrics of the epochs before it.
struct ResumePoint {
  int next_epoch = 1;
  int next_step = 0;
  std::vector<EpochMetrics> history;
  /// Epoch next_epoch, trained to its end but stopped during its evaluation: its training
  /// figures (epoch, train_loss, images_per_s, duration_s). A resume evaluates it first.
  std::optional<EpochMetrics> unevaluated;
};

/// The spec fields a checkpoint must agree with to be resumed (not the job id, the device or
/// the checkpoint interval).
nlohmann::json resume_key(const JobSpec& spec);

/// A checkpoint's payload (a LibTorch archive: weights, optimiser state, and the resume
/// point and key as JSON). CheckpointStore seals and writes it. `dataset_hash`: a folder
/// dataset's content hash as registered ("" for a built-in), kept with the resume key.
std::string encode_checkpoint(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer, const JobSpec& spec,
                              const ResumePoint& point, const std::string& dataset_hash = "");

/// Loads a payload into model and optimiser. nullopt when it is a checkpoint of another spec,
/// or of the same folder dataset registered again with other contents; throws (Error,
/// c10::Error, JSON errors) when it is not an intact checkpoint.
std::optional<ResumePoint> decode_checkpoint(const std::string& payload, const std::string& what, const JobSpec& spec,
                                             torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                                             torch::Device device, const std::string& dataset_hash = "");

// LibTorch 2.4 made autocast per device type; the CUDA-only calls warn there at every call.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define MLSWARM_AUTOCAST_PER_DEVICE 1
#else
#define MLSWARM_AUTOCAST_PER_DEVICE 0
#endif

/// bf16 autocast on CUDA for the scope of a forward pass and its loss (what LibTorch's C++
/// API offers of torch.autocast); nothing when `on` is false.
class CudaAutocast {
 public:
  explicit CudaAutocast(bool on) : on_(on) {
    if (!on_) return;
#if MLSWARM_AUTOCAST_PER_DEVICE
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~CudaAutocast() {
    if (!on_) return;
#if MLSWARM_AUTOCAST_PER_DEVICE
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }
  CudaAutocast(const CudaAutocast&) = delete;
  CudaAutocast& operator=(const CudaAutocast&) = delete;

 private:
  bool on_;
};

}  // namespace mlswarm
