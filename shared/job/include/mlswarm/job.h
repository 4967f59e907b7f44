#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlswarm/error.h"
#include "mlswarm/ports.h"

namespace mlswarm {

/// The settings of `train_opts` that name one of a few choices: parsed once, in the job spec,
/// into these; their JSON names are in EnumNames below.
enum class Optimizer { kSgd, kAdam, kAdamW };
enum class LrSchedule { kCosine, kConstant };
enum class TrainDevice { kAuto, kCpu, kCuda };
enum class Publish { kLast, kBest };
enum class Augment { kNone, kFlip, kCropFlip };
/// The network a job trains (`model_type`): also written in meta.json, from which serving rebuilds it.
enum class ModelType { kConvnet, kResnet, kMlp };

/// Each choice and its name in JSON, for to_string and parse_choice.
template <typename E>
struct EnumNames;
template <>
struct EnumNames<Optimizer> {
  static constexpr std::array<std::pair<Optimizer, std::string_view>, 3> table{
      {{Optimizer::kSgd, "sgd"}, {Optimizer::kAdam, "adam"}, {Optimizer::kAdamW, "adamw"}}};
};
template <>
struct EnumNames<LrSchedule> {
  static constexpr std::array<std::pair<LrSchedule, std::string_view>, 2> table{
      {{LrSchedule::kCosine, "cosine"}, {LrSchedule::kConstant, "constant"}}};
};
template <>
struct EnumNames<TrainDevice> {
  static constexpr std::array<std::pair<TrainDevice, std::string_view>, 3> table{
      {{TrainDevice::kAuto, "auto"}, {TrainDevice::kCpu, "cpu"}, {TrainDevice::kCuda, "cuda"}}};
};
template <>
struct EnumNames<Publish> {
  static constexpr std::array<std::pair<Publish, std::string_view>, 2> table{
      {{Publish::kLast, "last"}, {Publish::kBest, "best"}}};
};
template <>
struct EnumNames<Augment> {
  static constexpr std::array<std::pair<Augment, std::string_view>, 3> table{
      {{Augment::kNone, "none"}, {Augment::kFlip, "flip"}, {Augment::kCropFlip, "crop_flip"}}};
};

template <>
struct EnumNames<ModelType> {
  static constexpr std::array<std::pair<ModelType, std::string_view>, 3> table{
      {{ModelType::kConvnet, "convnet"}, {ModelType::kResnet, "resnet"}, {ModelType::kMlp, "mlp"}}};
};

/// The JSON name of a choice.
template <typename E>
constexpr std::string_view to_string(E value) noexcept {
  for (const auto& [e, name] : EnumNames<E>::table) {
    if (e == value) return name;
  }
  return EnumNames<E>::table[0].second;
}

/// The choice named `text`, or nullopt.
template <typename E>
constexpr std::optional<E> parse_choice(std::string_view text) noexcept {
  for (const auto& [e, name] : EnumNames<E>::table) {
    if (name == text) return e;
  }
  return std::nullopt;
}

/// Optimiser and loop settings of a job (`train_opts` in the job spec).
struct TrainOpts {
  int epochs = 10;
  int batch_size = 128;
  double lr = 0.05;                       ///< for "adam" the default is 0.001
  Optimizer optimizer = Optimizer::kSgd;  ///< "sgd" (with momentum), "adam" or "adamw" (decoupled weight decay)
  double momentum = 0.9;
  double weight_decay = 5e-4;
  LrSchedule lr_schedule = LrSchedule::kCosine;  ///< "cosine" (per step, to 0) or "constant"
  std::uint64_t seed = 1;                        ///< seeds weight init and the per-epoch shuffles
  TrainDevice device = TrainDevice::kAuto;       ///< "auto", "cpu" or "cuda"
  int checkpoint_every_steps = 0;                ///< 0: a checkpoint after every epoch only
  /// Early stopping: end the job (succeeded) after this many epochs without a better test
  /// accuracy than the best so far; 0 = train every epoch.
  int patience = 0;
  /// Which epoch the model's latest weights (what serving uses without a version) are:
  /// "last", or "best" (the best test accuracy so far). Every epoch is kept as a version either way.
  Publish publish = Publish::kLast;
  /// "none", or "crop_flip": each training image shifted by a random crop of the image padded
  /// by 4 pixels, and mirrored left-right with probability 1/2; drawn per (seed, epoch, step);
  /// or "flip": the mirroring alone (for images whose classes are mirror-symmetric: clothes,
  /// CIFAR-10's objects; not digits).
  Augment augment = Augment::kNone;
  /// 0..0.5, cross-entropy against smoothed targets. 0.1 by default: the convnet's 10-epoch
  /// Fashion-MNIST accuracy 0.9267 -> 0.9306 (bench/accuracy.sh, README).
  double label_smoothing = 0.1;
};

/// Where one rank of a data-parallel attempt runs, as the controller tells each trainer.
struct Placement {
  int rank = 0;
  int world_size = 1;
  std::vector<std::string> hosts;     ///< every rank's IPv4 address, rank order; Gloo binds to hosts[rank]
  int port = kDefaultRendezvousPort;  ///< the rendezvous (c10d TCPStore) port on hosts[0]
};

/// The most trainers one job may span.
inline constexpr int kMaxWorldSize = 64;

/// A validated training job as POST /train accepts it. Field names follow the seed.
struct JobSpec {
  std::string job_id;  ///< assigned by whoever accepts the job when not given
  std::string model_id;
  ModelType model_type = ModelType::kConvnet;  ///< "convnet", "resnet" or "mlp"
  std::string dataset = "fashion-mnist";
  /// `example_idxs: [start, end]`: the training subset [start, end) of the train split.
  std::optional<std::pair<std::int64_t, std::int64_t>> example_idxs;
  /// `test_idxs: [start, end]`: the range of the test split each epoch is evaluated on (its
  /// accuracy, test loss, per-class accuracy and confusion matrix); the whole split when unset.
  std::optional<std::pair<std::int64_t, std::int64_t>> test_idxs;
  TrainOpts train_opts;
  /// Data parallelism: the job trains on `trainers` trainers at once (1: one trainer, as
  /// before), or after a failure on at least `min_trainers`. train_opts.batch_size stays the
  /// global batch: each rank takes its share of every batch, so the run does not depend on
  /// how many trainers it has.
  int trainers = 1;
  int min_trainers = 1;
  int attempt = 1;  ///< set by the controller, at most kMaxAttempt; a trainer reports it back
  /// Set by the controller in the dispatch of a job with more than one rank.
  std::optional<Placement> placement;
  /// 1..epochs: the job ends (succeeded, its model published) after this epoch, on the
  /// learning-rate schedule of all `epochs`; 0 trains every epoch. A sweep's rung budget.
  int stop_after_epoch = 0;
  /// A job whose newest checkpoint this job starts from when it has none of its own (a sweep's
  /// promoted trial carries on from its last rung's job). Same spec but for job_id and these
  /// four fields, or the job fails with data_error; never job_id itself.
  std::string resume_from;
  /// The sweep this job is a trial of (empty: none), and which trial.
  std::string sweep_id;
  int trial = 0;
  /// {"name", ...rollout fields}: when the job succeeds, its model is rolled out onto the
  /// served name through the gate (or pins it, when the name serves nothing yet); null: none.
  /// Checked here for its name only; the controller checks the rest as a rollout.
  nlohmann::json deploy;
};

/// The last epoch a job trains: stop_after_epoch when set, else epochs.
inline int last_epoch(const JobSpec& spec) noexcept {
  return spec.stop_after_epoch > 0 ? spec.stop_after_epoch : spec.train_opts.epochs;
}

/// The highest attempt number a job may reach. The controller numbers every dispatch (and
/// the number fences the job's files), so this bounds what a peer can claim.
inline constexpr int kMaxAttempt = 100000;

/// Parses and validates a job spec. Throws Error(kInvalidArgument) naming the field for a
/// wrong type, an out-of-range value, an unknown field, model type or dataset, or an id that
/// is not a valid path component. A missing `model_id` becomes `job_id` or a fresh id.
JobSpec parse_job_spec(const nlohmann::json& body);

nlohmann::json to_json(const JobSpec& spec);

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

std::string_view to_string(JobState state) noexcept;
std::optional<JobState> parse_job_state(std::string_view text) noexcept;
inline bool is_terminal(JobState s) noexcept {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

/// Why a job failed, as a code the controller acts on (the message is for people).
enum class FailureCode {
  kNone,
  kInterrupted,  ///< its trainer shut down (SIGTERM) after writing a checkpoint: resume elsewhere
  kLostPeer,     ///< a rank of a data-parallel job lost its peers (a collective timed out)
  kSuperseded,   ///< a later attempt of the job took over its files
  kLostTrainer,  ///< its trainers kept vanishing; the controller gave up after max attempts
  kNoSpace,      ///< HOME_DIR was full when it wrote a file: resume elsewhere after a backoff
  kInvalidSpec,  ///< the spec cannot be trained (e.g. too few examples, no such device)
  kDataError,    ///< a dataset or checkpoint file is missing or corrupt
  kOutOfMemory,
  kInternal,
};

std::string_view to_string(FailureCode code) noexcept;
/// kNone for an unknown name (a newer peer's code is still a failure, just not one we act on).
FailureCode parse_failure_code(std::string_view text) noexcept;
/// The failure code for an exception's error code (kSuperseded -> superseded, kDataError ->
/// data_error, kInvalidArgument -> invalid_spec, ...).
FailureCode failure_for(ErrorCode code) noexcept;

/// How far a job has got: the one shape that a trainer's training loop reports, its status
/// board keeps, its /status sends, and the controller copies into its own record.
struct JobProgress {
  int epoch = 0;  ///< the epoch in progress, counting from 1; 0 before the first
  int step = 0;   ///< steps done in the current epoch
  int steps_per_epoch = 0;
  double fraction = 0;             ///< 0..1 over the whole job ("progress" in JSON)
  std::optional<double> loss;      ///< running training loss of the current epoch
  std::optional<double> accuracy;  ///< last test accuracy
  double images_per_s = 0;         ///< training images per second in the current epoch
  std::string device;

  /// Takes a newer report: every field, except that one without a loss, an accuracy or a
  /// device keeps those already known (mid-epoch reports carry no new accuracy).
  void update(const JobProgress& newer);
};

/// What a job looks like to clients (the architecture doc's `job` shape). Times are Unix seconds.
struct JobRecord {
  JobSpec spec;
  JobState state = JobState::kQueued;
  JobProgress progress;
  std::string trainer;  ///< the trainer running it (rank 0 of a data-parallel job)
  /// Every rank's trainer, rank order (the controller's record of a running job); a trainer's
  /// own record has its rank and the world size instead.
  std::vector<std::string> trainers;
  int rank = 0;
  int world_size = 1;
  int rendezvous_port = 0;  ///< of the current attempt, when it spans several trainers
  std::string error;
  FailureCode failure = FailureCode::kNone;  ///< set when state is failed
  int lost_attempts = 0;   ///< attempts whose trainer vanished or restarted (counted against max attempts)
  std::string request_id;  ///< the X-Request-Id of the POST /train that created the job
  double created_at = 0;
  double started_at = 0;
  double finished_at = 0;
  double updated_at = 0;
};

/// Serialises with duration and ETA derived from `now` (Unix seconds).
nlohmann::json to_json(const JobRecord& job, double now);

/// Reads what to_json wrote (a trainer's report, a journal line). Throws Error(kDataError)
/// when a field is missing or of the wrong type, or the spec does not validate.
JobRecord job_record_from_json(const nlohmann::json& j);

/// Seconds since the Unix epoch, with sub-second precision.
double unix_now();

}  // namespace mlswarm
