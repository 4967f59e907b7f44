#include "training.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "checkpoint_store.h"
#include "data_parallel.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/error.h"
#include "mlswarm/model_meta.h"
#include "mlswarm/torch/model_zoo.h"
#include "training_parts.h"

namespace mlswarm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kReportEvery = std::chrono::milliseconds(500);

/// torch::manual_seed is process-global; jobs on other workers must not interleave with
/// the seeding and the initialisation it is for.
std::mutex g_init_mutex;

/// What a model's meta.json says before any epoch: where it comes from and its input.
ModelMeta meta_for(const JobSpec& spec, const DatasetInfo& info) {
  ModelMeta meta;
  meta.model_id = spec.model_id;
  meta.model_type = spec.model_type;
  meta.dataset = spec.dataset;
  meta.class_names = info.class_names;
  meta.channels = info.channels;
  meta.height = info.height;
  meta.width = info.width;
  meta.job_id = spec.job_id;
  meta.attempt = spec.attempt;
  meta.spec = to_json(spec);
  return meta;
}

/// One attempt of one job, in the order it runs: prepare (the constructor: data, model,
/// optimiser, and the group of a data-parallel job), resume (claim the job, load the newest
/// checkpoint, hand rank 0's state to every rank), then per epoch: train (stopping at a batch
/// boundary when asked, with a checkpoint), evaluate, publish (model.pt, meta.json and the
/// next checkpoint, under the job's fence). Rank 0 (or the only rank) writes every file.
class TrainingRun {
 public:
  TrainingRun(const JobSpec& spec, const TrainingEnv& env, const TrainingHooks& hooks)
      : spec_(spec),
        o_(spec.train_opts),
        hooks_(hooks),
        device_(pick_device(o_.device)),
        store_(job_dir(env.home_dir, spec.job_id), spec.attempt),
        home_dir_(env.home_dir),
        last_epoch_(last_epoch(spec)),
        model_path_(model_dir(env.home_dir, spec.model_id)),
        keep_versions_(env.keep_versions),
        leader_(!spec.placement || spec.placement->rank == 0),
        fast_(fast_path_for(env, device_, spec)) {
    prepare_data(*env.datasets);
    prepare_model();
    if (spec.placement && spec.placement->world_size > 1) {
      const Placement& p = *spec.placement;
      spdlog::info("job {} model {}: rank {} of {}, meeting the others at {}:{}", spec.job_id, spec.model_id, p.rank,
                   p.world_size, p.hosts.front(), p.port);
      group_ = std::make_unique<DataParallel>(p, spec.job_id, spec.attempt, env.dist_timeout);
    }
  }

  TrainingOutcome run() {
    resume();
    if (leader_ && resume_epoch_ > last_epoch_ && !point_.unevaluated) {
      adopt_finished_model();
      return TrainingOutcome::kCompleted;
    }
    spdlog::info("job {} model {}: training {} on {} [{}, {}) {}, batch {}, {} steps/epoch, {}", spec_.job_id,
                 spec_.model_id, to_string(spec_.model_type), spec_.dataset, start_, start_ + n_,
                 last_epoch_ == o_.epochs ? fmt::format("for {} epochs", o_.epochs)
                                          : fmt::format("to epoch {} of {}", last_epoch_, o_.epochs),
                 batch_, steps_per_epoch_, precision_name());
    for (int epoch = resume_epoch_; epoch <= last_epoch_; ++epoch) {
      std::optional<EpochResult> trained;
      if (epoch == resume_epoch_ && point_.unevaluated) {
        trained = trained_before(*point_.unevaluated);  // a stop came during its evaluation
      } else {
        trained = train_epoch(epoch, epoch == resume_epoch_ ? resume_step_ : 0);
      }
      if (!trained) return TrainingOutcome::kStopped;
      if (group_) share_epoch_end(*trained);
      // Ranks evaluate together (their sums are added up), so only a single-rank job stops
      // in the middle of an evaluation; it runs again on resume, not the epoch's training.
      std::optional<Evaluation> evaluated =
          group_ ? evaluate_shared() : evaluate(model_, test_x_, test_y_, hooks_.should_stop);
      if (!evaluated) {
        store_.save(checkpoint(epoch, steps_per_epoch_, unevaluated_of(*trained)));
        spdlog::info(
            "job {} model {}: stopped during the evaluation of epoch {}; checkpoint written (the "
            "evaluation runs again on resume)",
            spec_.job_id, spec_.model_id, epoch);
        return TrainingOutcome::kStopped;
      }
      const Evaluation& eval = *evaluated;
      // Every rank sees the same (allreduced) evaluation, so every rank decides alike.
      const bool best = is_best_epoch(accuracies_, eval.accuracy);
      accuracies_.push_back(eval.accuracy);
      if (leader_) {
        publish(*trained, eval, best || o_.publish == Publish::kLast);
      } else if (hooks_.report) {
        JobProgress done = trained->progress;
        done.accuracy = eval.accuracy;
        hooks_.report(done);
      }
      if (epoch < last_epoch_ && should_stop_early(accuracies_, o_.patience)) {
        spdlog::info(
            "job {} model {}: stopping early after epoch {}: no better test accuracy for {} epochs "
            "(best {:.4f})",
            spec_.job_id, spec_.model_id, epoch, o_.patience,
            *std::max_element(accuracies_.begin(), accuracies_.end()));
        break;
      }
    }
    return TrainingOutcome::kCompleted;
  }

 private:
  /// How an epoch went: its progress at the end, and its training time.
  struct EpochResult {
    JobProgress progress;
    double seconds = 0;
  };
  /// The running sums of an epoch.
  struct Epoch {
    int number = 0;
    torch::Tensor order;  ///< the shuffle, a function of (seed, epoch) only
    torch::Tensor loss_sum;
    std::int64_t images = 0;
    double shared_loss_sum = 0;  ///< summed over the ranks (a data-parallel job)
    Clock::time_point started;
  };

  /// The steps this job trains (to its last epoch), for its progress.
  double job_steps() const { return static_cast<double>(std::int64_t{steps_per_epoch_} * last_epoch_); }

  std::string device_name() const { return device_.is_cuda() ? "cuda" : "cpu"; }
  /// For the operator's log: the device and what runs on it.
  std::string precision_name() const {
    if (fast_.gpu_lacks_bf16) return device_name() + " fp32 (TRAIN_AMP: this GPU has no fast bf16)";
    if (!fast_.amp) return device_name() + (fast_.channels_last ? " fp32, channels-last" : " fp32");
    return device_name() + (fast_.channels_last ? " bf16 autocast, channels-last" : " bf16 autocast");
  }

  void prepare_data(DatasetCache& datasets) {
    data_ = datasets.get(spec_.dataset);
    const DatasetInfo& info = data_->info;
    std::int64_t end = 0;
    std::tie(start_, end) = subset_of(spec_, *data_);
    meta_ = meta_for(spec_, info);
    channel_stats(*data_, start_, end, meta_.mean, meta_.std);
    std::tie(train_x_, train_y_) = resident_split(data_->train, info, start_, end, meta_.mean, meta_.std, device_);
    const auto [test_start, test_end] = test_range_of(spec_, *data_);
    std::tie(test_x_, test_y_) =
        resident_split(data_->test, info, test_start, test_end, meta_.mean, meta_.std, device_);
    n_ = end - start_;
    batch_ = std::min<std::int64_t>(o_.batch_size, n_);
    // A last batch of one sample would break batch norm; it is dropped.
    steps_per_epoch_ = static_cast<int>(n_ / batch_ + ((n_ % batch_) >= 2 ? 1 : 0));
    total_steps_ = std::int64_t{steps_per_epoch_} * o_.epochs;  // the schedule's, whatever the stop
  }

  void prepare_model() {
    {
      std::lock_guard lock(g_init_mutex);
      torch::manual_seed(o_.seed);
      model_ = model_for(spec_, data_->info);
    }
    model_->to(device_);
    if (fast_.channels_last) use_channels_last(*model_);
    model_->train();
    optimizer_ = make_optimizer(model_, o_);
  }

  void resume() {
    if (leader_) {
      store_.claim();  // from here on, nothing of an older attempt lands
      auto use = [&](const std::string& payload, const std::string& what) {
        auto point = decode_checkpoint(payload, what, spec_, model_, *optimizer_, device_, data_->info.content_hash);
        if (point) point_ = std::move(*point);
        return point.has_value();
      };
      const bool resumed = store_.resume(use);
      if (!resumed && !spec_.resume_from.empty()) carry_on_from(spec_.resume_from, use);
      if (resumed && point_.unevaluated) {
        spdlog::info("job {} model {}: resuming from checkpoint at the evaluation of epoch {}", spec_.job_id,
                     spec_.model_id, point_.next_epoch);
      } else if (resumed) {
        spdlog::info("job {} model {}: resuming from checkpoint at epoch {} step {}", spec_.job_id, spec_.model_id,
                     point_.next_epoch, point_.next_step);
      }
      meta_.epochs = point_.history;
    }
    if (group_) {
      // Every rank starts from rank 0's weights, optimiser state and resume point.
      std::string state = leader_ ? checkpoint(point_.next_epoch, point_.next_step) : std::string();
      group_->broadcast_bytes(state);
      if (!leader_) {
        point_ =
            decode_checkpoint(state, "rank 0's state", spec_, model_, *optimizer_, device_, data_->info.content_hash)
                .value();
      }
    }
    if (point_.next_step >= steps_per_epoch_ && !point_.unevaluated) {
      ++point_.next_epoch;
      point_.next_step = 0;
    }
    resume_epoch_ = point_.next_epoch;
    resume_step_ = point_.next_step;
    accuracies_.clear();
    for (const auto& e : point_.history) accuracies_.push_back(e.accuracy);
  }

  /// A job with nothing of its own to resume that carries on from `job_id`'s newest checkpoint
  /// (a sweep's promoted trial); read only, that job's files stay as they are. Without one
  /// that fits this spec the job fails: training from scratch would give another result.
  void carry_on_from(const std::string& job_id,
                     const std::function<bool(const std::string&, const std::string&)>& use) {
    const CheckpointStore from(job_dir(home_dir_, job_id), 0);
    if (!from.resume(use)) {
      throw Error(
          ErrorCode::kDataError,
          fmt::format("job {} carries on from job {}, which has no checkpoint of this spec", spec_.job_id, job_id));
    }
    spdlog::info("job {} model {}: carrying on from job {}'s checkpoint at epoch {}", spec_.job_id, spec_.model_id,
                 job_id, point_.next_epoch);
  }

  /// A resumed attempt with no epoch left to train: an earlier attempt of this job published
  /// its last epoch and was lost before the controller heard that it had finished (its trainer
  /// killed in that moment). That model is the job's result; meta.json is rewritten as this
  /// attempt's, so the controller finds the job's model published by the attempt reporting it,
  /// and the attempt reports that model's figures (its last epoch, accuracy and loss), not the
  /// empty ones of an attempt that trained nothing (issue 38: a trial showed epoch 1 of 3).
  void adopt_finished_model() {
    ModelMeta adopted;
    store_.guarded([&] {
      const auto path = model_path_ / "meta.json";
      ModelMeta meta = model_meta_from_json(nlohmann::json::parse(read_file(path, 64u << 20)));
      if (meta.job_id != spec_.job_id) {
        throw Error(ErrorCode::kDataError, fmt::format("the checkpoint says job {} finished, but {} was written by "
                                                       "job {}",
                                                       spec_.job_id, path.string(), meta.job_id));
      }
      meta.attempt = spec_.attempt;
      write_file_atomic(path, to_json(meta).dump(2));
      adopted = std::move(meta);
    });
    if (hooks_.report && !adopted.epochs.empty()) {
      const EpochMetrics& last = adopted.epochs.back();
      JobProgress done;
      done.epoch = last.epoch;
      done.step = steps_per_epoch_;
      done.steps_per_epoch = steps_per_epoch_;
      done.fraction = 1.0;
      done.loss = last.train_loss;
      done.accuracy = last.accuracy;
      done.images_per_s = last.images_per_s;
      hooks_.report(done);
    }
    spdlog::info("job {} model {}: an earlier attempt trained every epoch; its model is taken as attempt {}'s",
                 spec_.job_id, spec_.model_id, spec_.attempt);
  }

  /// Trains one epoch from `first_step`; nullopt when asked to stop (a checkpoint is written
  /// at that batch).
  std::optional<EpochResult> train_epoch(int number, int first_step) {
    Epoch epoch = start_epoch(number);
    auto last_report = epoch.started;
    for (int step = first_step; step < steps_per_epoch_; ++step) {
      if (!group_ && hooks_.should_stop && hooks_.should_stop()) {
        store_.save(checkpoint(number, step));
        spdlog::info("job {} model {}: stopped at epoch {} step {}; checkpoint written", spec_.job_id, spec_.model_id,
                     number, step);
        return std::nullopt;
      }
      // Ranks decide together, after the step; never at the last step (its epoch ends first).
      if (group_ && train_shared_step(epoch, step) && step + 1 < steps_per_epoch_) {
        if (leader_) store_.save(checkpoint(number, step + 1));
        spdlog::info("job {} model {}: stopped with every rank after epoch {} step {}{}", spec_.job_id, spec_.model_id,
                     number, step + 1, leader_ ? "; checkpoint written" : "");
        return std::nullopt;
      }
      if (!group_) train_step(epoch, step);
      if (leader_ && o_.checkpoint_every_steps > 0 && (step + 1) % o_.checkpoint_every_steps == 0 &&
          step + 1 < steps_per_epoch_) {
        store_.save(checkpoint(number, step + 1));
      }
      if (hooks_.report && Clock::now() - last_report >= kReportEvery) {
        last_report = Clock::now();
        hooks_.report(progress_of(epoch, step + 1));
      }
    }
    EpochResult result{progress_of(epoch, steps_per_epoch_), 0};
    result.seconds = std::chrono::duration<double>(Clock::now() - epoch.started).count();
    return result;
  }

  Epoch start_epoch(int number) const {
    Epoch e;
    e.number = number;
    auto generator =
        at::make_generator<at::CPUGeneratorImpl>(o_.seed * 1000003ULL + static_cast<std::uint64_t>(number));
    e.order = torch::randperm(n_, generator, torch::TensorOptions().dtype(torch::kInt64)).to(device_);
    e.loss_sum = torch::zeros({}, train_x_.options());
    e.started = Clock::now();
    return e;
  }

  void train_step(Epoch& e, int step) {
    const std::int64_t lo = std::int64_t{step} * batch_;
    const std::int64_t hi = std::min(n_, lo + batch_);
    auto idx = e.order.slice(0, lo, hi);
    auto xb = augment_batch(train_x_.index_select(0, idx), o_, e.number, step, 0, hi - lo);
    xb = in_layout(xb, fast_.channels_last);
    auto yb = train_y_.index_select(0, idx);
    const double lr = scheduled_lr(o_, std::int64_t{e.number - 1} * steps_per_epoch_ + step, total_steps_);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
    optimizer_->zero_grad();
    torch::Tensor loss;
    {
      CudaAutocast autocast(fast_.amp);
      loss = torch::nn::functional::cross_entropy(
          model_->forward(xb), yb,
          torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o_.label_smoothing));
    }
    loss.backward();
    optimizer_->step();
    e.loss_sum += loss.detach() * static_cast<double>(hi - lo);
    e.images += hi - lo;
  }

  /// One step of a data-parallel job: this rank's share of the global batch, gradients summed
  /// over the ranks, the same optimiser step everywhere. Returns whether any rank was asked to
  /// stop.
  bool train_shared_step(Epoch& e, int step) {
    const std::int64_t lo = std::int64_t{step} * batch_;
    const std::int64_t count = std::min(n_, lo + batch_) - lo;
    const std::int64_t ranks = group_->world_size();
    const std::int64_t rank = group_->rank();
    const std::int64_t share = count / ranks + (rank < count % ranks ? 1 : 0);
    const std::int64_t first = lo + rank * (count / ranks) + std::min(rank, count % ranks);
    const double lr = scheduled_lr(o_, std::int64_t{e.number - 1} * steps_per_epoch_ + step, total_steps_);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
    const auto computing = Clock::now();
    DataParallel::zero_gradients(*model_);
    double local_loss_sum = 0;
    if (share > 0) {
      auto idx = e.order.slice(0, first, first + share);
      auto xb = in_layout(augment_batch(train_x_.index_select(0, idx), o_, e.number, step, first - lo, share),
                          fast_.channels_last);
      torch::Tensor loss_sum;
      {
        CudaAutocast autocast(fast_.amp);
        loss_sum = torch::nn::functional::cross_entropy(model_->forward(xb), train_y_.index_select(0, idx),
                                                        torch::nn::functional::CrossEntropyFuncOptions()
                                                            .reduction(torch::kSum)
                                                            .label_smoothing(o_.label_smoothing));
      }
      // Divided by the global count: the summed gradients are those of the global batch's mean.
      (loss_sum / static_cast<double>(count)).backward();
      local_loss_sum = loss_sum.item<double>();
    }
    compute_seconds_ += std::chrono::duration<double>(Clock::now() - computing).count();
    const bool stop = hooks_.should_stop && hooks_.should_stop();
    const auto summed =
        group_->allreduce_gradients(*model_, {local_loss_sum, static_cast<double>(share), stop ? 1.0 : 0.0});
    optimizer_->step();
    e.shared_loss_sum += summed[0];
    e.images += count;
    return summed[2] > 0.5;
  }

  /// After an epoch on every rank: rank 0's batch-norm statistics everywhere (for the
  /// evaluation), and each rank's parameter checksum in its log (they must agree).
  void share_epoch_end(const EpochResult& trained) {
    group_->broadcast_buffers(*model_);
    const double seconds = group_->allreduce_seconds() - allreduce_seconds_;
    const auto steps = group_->allreduces() - allreduces_;
    allreduce_seconds_ = group_->allreduce_seconds();
    allreduces_ = group_->allreduces();
    const double per_step = steps > 0 ? 1000.0 / static_cast<double>(steps) : 0.0;
    spdlog::info(
        "job {} model {}: epoch {} rank {} parameters crc32 {:08x}; per step {:.2f} ms computing, "
        "{:.2f} ms in allreduce",
        spec_.job_id, spec_.model_id, trained.progress.epoch, group_->rank(), parameter_checksum(*model_),
        compute_seconds_ * per_step, seconds * per_step);
    compute_seconds_ = 0;
  }

  /// The test split in one shard per rank, the sums added up: every rank's evaluation.
  Evaluation evaluate_shared() {
    const std::int64_t total = test_x_.size(0);
    const std::int64_t ranks = group_->world_size();
    const std::int64_t lo = total * group_->rank() / ranks;
    const std::int64_t hi = total * (group_->rank() + 1) / ranks;
    EvaluationSums mine;
    if (hi > lo) mine = *evaluate_sums(model_, test_x_.slice(0, lo, hi), test_y_.slice(0, lo, hi));
    const std::size_t k = meta_.class_names.size();
    mine.confusion.resize(k * k, 0.0);  // a rank with no shard adds zeros
    std::vector<double> values{mine.loss_sum, mine.correct, mine.count};
    values.insert(values.end(), mine.confusion.begin(), mine.confusion.end());
    const auto all = group_->allreduce_values(values);
    return evaluation_of({all[0], all[1], all[2], std::vector<double>(all.begin() + 3, all.end())});
  }

  JobProgress progress_of(const Epoch& e, int step) const {
    JobProgress p;
    p.epoch = e.number;
    p.step = step;
    p.steps_per_epoch = steps_per_epoch_;
    p.fraction = static_cast<double>(std::int64_t{e.number - 1} * steps_per_epoch_ + step) / job_steps();
    if (e.images == 0) {
      p.loss = 0.0;
    } else {
      p.loss = (group_ ? e.shared_loss_sum : e.loss_sum.item<double>()) / static_cast<double>(e.images);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - e.started).count();
    p.images_per_s = seconds > 0 ? static_cast<double>(e.images) / seconds : 0.0;
    p.device = device_name();
    return p;
  }

  /// The checkpoint payload that resumes at (next_epoch, next_step); with `unevaluated`, at
  /// the evaluation of epoch next_epoch, trained to its end.
  std::string checkpoint(int next_epoch, int next_step, std::optional<EpochMetrics> unevaluated = std::nullopt) {
    point_.next_epoch = next_epoch;
    point_.next_step = next_step;
    point_.history = meta_.epochs;
    point_.unevaluated = std::move(unevaluated);
    return encode_checkpoint(model_, *optimizer_, spec_, point_, data_->info.content_hash);
  }

  /// What a checkpoint keeps of an epoch trained to its end but not evaluated...
  static EpochMetrics unevaluated_of(const EpochResult& trained) {
    EpochMetrics m;
    m.epoch = trained.progress.epoch;
    m.train_loss = trained.progress.loss.value_or(0);
    m.images_per_s = trained.progress.images_per_s;
    m.duration_s = trained.seconds;
    return m;
  }

  /// ...and that epoch again, as train_epoch returned it, on resume.
  EpochResult trained_before(const EpochMetrics& m) const {
    EpochResult r;
    r.progress.epoch = m.epoch;
    r.progress.step = steps_per_epoch_;
    r.progress.steps_per_epoch = steps_per_epoch_;
    r.progress.fraction = static_cast<double>(std::int64_t{m.epoch} * steps_per_epoch_) / job_steps();
    r.progress.loss = m.train_loss;
    r.progress.images_per_s = m.images_per_s;
    r.progress.device = device_name();
    r.seconds = m.duration_s;
    return r;
  }

  /// After an epoch: model.pt, meta.json and the checkpoint for the next epoch, together.
  /// The epoch is always kept as a version; `latest` also makes it what serving uses by default.
  void publish(const EpochResult& trained, const Evaluation& eval, bool latest) {
    JobProgress done = trained.progress;
    done.accuracy = eval.accuracy;
    const double train_loss = done.loss.value_or(0);
    meta_.epochs.push_back({done.epoch, train_loss, eval.loss, eval.accuracy, done.images_per_s, trained.seconds});
    meta_.version = done.epoch;
    meta_.updated_at = unix_now();
    meta_.confusion = eval.confusion;
    const std::string weights = save_module(model_);
    meta_.model_crc32 = crc32_of(weights);
    store_.publish(
        [&] {
          // The pinned version first (model.pt before meta.json, each renamed into place, so a
          // reader never sees a meta.json without its weights), then the latest.
          const std::string meta_text = to_json(meta_).dump(2);
          const auto version_dir = model_path_ / "versions" / std::to_string(meta_.version);
          std::filesystem::create_directories(version_dir);
          write_file_atomic(version_dir / "model.pt", weights);
          write_file_atomic(version_dir / "meta.json", meta_text);
          if (latest) {
            write_file_atomic(model_path_ / "model.pt", weights);
            write_file_atomic(model_path_ / "meta.json", meta_text);
          }
          prune_versions(model_path_ / "versions", meta_.version - keep_versions_);
        },
        checkpoint(done.epoch + 1, 0));
    spdlog::info("job {} model {}: epoch {}/{} loss {:.4f} test loss {:.4f} accuracy {:.4f} {:.0f} images/s",
                 spec_.job_id, spec_.model_id, done.epoch, last_epoch_, train_loss, eval.loss, eval.accuracy,
                 done.images_per_s);
    if (hooks_.report) hooks_.report(done);
  }

  /// Removes versions/<n> for every n <= `up_to` that no served name pins (kPinnedMarker), and
  /// anything there that is not a version.
  static void prune_versions(const std::filesystem::path& dir, int up_to) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      int n = 0;
      const bool number = !name.empty() && name.size() < 9 &&
                          name.find_first_not_of("0123456789") == std::string::npos && (n = std::stoi(name)) > 0;
      if (number && (n > up_to || std::filesystem::exists(entry.path() / kPinnedMarker, ec))) continue;
      std::error_code remove_ec;
      std::filesystem::remove_all(entry.path(), remove_ec);
      if (remove_ec) spdlog::warn("cannot remove {}: {}", entry.path().string(), remove_ec.message());
    }
  }

  const JobSpec& spec_;
  const TrainOpts& o_;
  const TrainingHooks& hooks_;
  torch::Device device_;
  CheckpointStore store_;
  std::filesystem::path home_dir_;
  int last_epoch_ = 0;  ///< stop_after_epoch, else epochs
  std::filesystem::path model_path_;
  int keep_versions_ = 5;
  std::vector<double> accuracies_;  ///< test accuracy of every epoch so far (resumed ones too)
  std::shared_ptr<const Dataset> data_;
  ModelMeta meta_;
  std::int64_t start_ = 0;
  std::int64_t n_ = 0;
  std::int64_t batch_ = 0;
  int steps_per_epoch_ = 0;
  std::int64_t total_steps_ = 0;
  torch::Tensor train_x_, train_y_, test_x_, test_y_;
  torch::nn::Sequential model_{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  ResumePoint point_;
  int resume_epoch_ = 1;
  int resume_step_ = 0;
  bool leader_ = true;                   ///< rank 0, or the only rank: evaluates and writes files
  FastPath fast_;                        ///< bf16 autocast, channels-last (fast_path_for)
  std::unique_ptr<DataParallel> group_;  ///< set for a job of several ranks
  double allreduce_seconds_ = 0;         ///< of the group, at the end of the last epoch
  double compute_seconds_ = 0;           ///< forward and backward in this epoch (a data-parallel job)
  std::uint64_t allreduces_ = 0;
};

}  // namespace

TrainingOutcome run_training(const JobSpec& spec, const TrainingEnv& env, const TrainingHooks& hooks) {
  try {
    return TrainingRun(spec, env, hooks).run();
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

}  // namespace mlswarm
