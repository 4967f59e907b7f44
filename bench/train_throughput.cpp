// Training throughput: the trainer's real loop (resident dataset, per-epoch shuffle, batch
// gather, forward, backward, step, progress reports) next to its ceiling, the same model and
// optimiser stepping on one resident batch. Both run in this process, on the same device and
// thread count, alternating round by round so that drift in what a shared machine gives us
// hits both sides alike.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>
#include <tuple>
#include <iostream>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <stb_image_write.h>

#include "mlswarm/allocator.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/folder_dataset.h"
#include "mlswarm/job.h"
#include "training.h"

namespace {

using namespace mlswarm;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Options {
  std::string data_dir = "/usr/share/datasets";
  std::string device = "auto";
  std::string model_type = "convnet";
  std::string amp = "both";
  int batch = 128, rounds = 3, threads = 0;
  std::int64_t examples = 60000;
  int folder = 0;  ///< > 0: train on a folder dataset of this many JPEGs instead
  int folder_side = 64;
};

void add_options(CLI::App& app, Options& o) {
  app.add_option("--data-dir", o.data_dir, "DATA_DIR holding fashion-mnist/")->capture_default_str();
  app.add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--model-type", o.model_type, "convnet, resnet or mlp")->capture_default_str();
  app.add_option("--batch-size", o.batch)->capture_default_str();
  app.add_option("--rounds", o.rounds, "rounds of (ceiling, one real epoch) per mode")->capture_default_str();
  app.add_option("--examples", o.examples, "training images per epoch")->capture_default_str();
  app.add_option("--threads", o.threads, "LibTorch threads, 0 = one per core")->capture_default_str();
  app.add_option("--folder", o.folder,
                 "write this many Fashion-MNIST images as colour JPEGs into a folder dataset, time its "
                 "registration and its decoding, and train on it")
      ->capture_default_str();
  app.add_option("--folder-side", o.folder_side, "the folder's images' side in pixels")->capture_default_str();
  app.add_option("--fast-path,--amp", o.amp,
                 "1: the fast path (on CUDA bf16 autocast and channels-last, TRAIN_AMP; on the CPU fp32 "
                 "channels-last, TRAIN_CPU_CHANNELS_LAST), 0: fp32 NCHW, both: the two alternating round by round")
      ->check(CLI::IsMember({"0", "1", "both"}))
      ->capture_default_str();
}

/// One way of training (the fast path or fp32 NCHW) and what its rounds measured.
struct Mode {
  explicit Mode(bool f) : fast(f) {}
  bool fast;
  std::vector<double> ceilings, loops, jobs, ratios;
  JobProgress last;
};

/// The benchmark's jobs, on a HOME_DIR of their own.
class Bench {
 public:
  explicit Bench(const Options& o)
      : o_(o),
        home_(std::filesystem::temp_directory_path() / fmt::format("mlswarm-bench-{}", ::getpid())),
        cache_(o.data_dir, home_),
        env_{home_, &cache_},
        cuda_((o.device == "auto" ? best_device() : o.device) == "cuda") {
    cache_.get("fashion-mnist");  // read the files once, outside every timing
    if (o.folder > 0) make_folder_dataset();
  }
  ~Bench() { std::filesystem::remove_all(home_); }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  std::string name(const Mode& m) const {
    return !m.fast ? "fp32 NCHW" : cuda_ ? "bf16+channels-last" : "fp32 channels-last";
  }
  int steps() const { return static_cast<int>(examples_ / o_.batch); }

  /// Thread pool, allocator, clocks, cuDNN's choices for the mode.
  void warm_up(const Mode& m) {
    use(m);
    resident_batch_images_per_s(spec(), env_, 100);
  }

  /// The ceiling, then one real epoch, in mode `m`.
  void round(int number, Mode& m) {
    use(m);
    const double ceiling = resident_batch_images_per_s(spec(), env_, steps());
    TrainingHooks hooks{[&](const JobProgress& p) { m.last = p; }, [] { return false; }};
    const auto t0 = std::chrono::steady_clock::now();
    run_training(spec(), env_, hooks);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m.ceilings.push_back(ceiling);
    m.loops.push_back(m.last.images_per_s);
    m.jobs.push_back(static_cast<double>(examples_) / wall);
    m.ratios.push_back(m.last.images_per_s / ceiling);
    std::cout << fmt::format("round {} {}: ceiling {:.0f}  real loop {:.0f}  ratio {:.3f}\n", number, name(m), ceiling,
                             m.last.images_per_s, m.ratios.back());
  }

  void summary(const Mode& m) const {
    const double ceiling = median(m.ceilings), loop = median(m.loops), job = median(m.jobs);
    std::cout << fmt::format(
        "device {}  model {}  batch {}  threads {}  {}  medians of {} rounds\n"
        "ceiling   (one resident batch, {} steps):                {:>8.0f} images/s\n"
        "trainer   (real loop, one epoch of {} images):          {:>8.0f} images/s  ratio {:.3f}\n"
        "whole job (+ tensor prep, test-set eval, checkpoints):  {:>8.0f} images/s  ratio {:.3f}\n"
        "test accuracy after one epoch {:.4f}\n",
        m.last.device, o_.model_type, o_.batch, o_.threads, name(m), o_.rounds, steps(), ceiling, examples_, loop,
        median(m.ratios), job, job / ceiling, m.last.accuracy.value_or(0));
  }

 private:
  /// HOME_DIR/datasets/folder: the first o.folder training images (and 1,000 test images) as
  /// colour JPEGs of o.folder_side pixels a side, a folder per class; registered and decoded
  /// once, each timed.
  void make_folder_dataset() {
    const auto source = cache_.get("fashion-mnist");
    const int side = o_.folder_side;
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& [split, from, count] :
         {std::tuple{"train", &source->train, std::min<std::int64_t>(o_.folder, source->train.count)},
          std::tuple{"test", &source->test, std::int64_t{1000}}}) {
      for (std::int64_t i = 0; i < count; ++i) {
        std::vector<unsigned char> rgb(static_cast<std::size_t>(side) * side * 3);
        for (int y = 0; y < side; ++y) {
          for (int x = 0; x < side; ++x) {
            const unsigned char v =
                from->images[static_cast<std::size_t>(i * 784 + (y * 28 / side) * 28 + x * 28 / side)];
            for (int c = 0; c < 3; ++c) rgb[static_cast<std::size_t>((y * side + x) * 3 + c)] = v;
          }
        }
        const auto dir =
            home_ / "datasets" / "folder" / split / std::to_string(from->labels[static_cast<std::size_t>(i)]);
        std::filesystem::create_directories(dir);
        stbi_write_jpg((dir / fmt::format("{}.jpg", i)).c_str(), side, side, 3, rgb.data(), 90);
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    FolderRequest request;
    request.name = "folder";
    request.path = "datasets/folder";
    const FolderManifest m = scan_image_folder(home_, request);
    write_folder_manifest(home_, m);
    const auto t2 = std::chrono::steady_clock::now();
    const auto data = cache_.get("folder");
    const auto t3 = std::chrono::steady_clock::now();
    const double images = static_cast<double>(data->train.count + data->test.count);
    auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    std::cout << fmt::format(
        "folder dataset: {} JPEGs of {}x{}x3 written in {:.1f} s; registered (headers read, every image decoded "
        "once) in {:.1f} s; loaded (decoded and resized on {} threads) in {:.1f} s: {:.0f} images/s\n",
        static_cast<std::int64_t>(images), side, side, secs(t0, t1), secs(t1, t2), std::thread::hardware_concurrency(),
        secs(t2, t3), images / secs(t2, t3));
    dataset_ = "folder";
    examples_ = std::min<std::int64_t>(o_.examples, data->train.count);
  }

  JobSpec spec() {
    auto id = fmt::format("bench-{}", jobs_run_++);
    return parse_job_spec({{"job_id", id},
                           {"model_id", id},
                           {"dataset", dataset_},
                           {"model_type", o_.model_type},
                           {"example_idxs", {0, examples_}},
                           {"train_opts", {{"epochs", 1}, {"batch_size", o_.batch}, {"device", o_.device}}}});
  }
  void use(const Mode& m) {
    env_.cuda_fast_path = m.fast;
    env_.cpu_channels_last = m.fast;
  }

  const Options& o_;
  std::filesystem::path home_;
  DatasetCache cache_;
  TrainingEnv env_;
  bool cuda_;
  int jobs_run_ = 0;
  std::string dataset_ = "fashion-mnist";
  std::int64_t examples_ = o_.examples;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"mlswarm training-throughput benchmark (Fashion-MNIST)"};
  add_options(app, o);
  CLI11_PARSE(app, argc, argv);
  std::cout << tune_allocator_for_tensors() << " (as ml_trainer)\n";
  spdlog::set_level(spdlog::level::warn);
  set_training_threads(o.threads);

  std::vector<Mode> modes;
  if (o.amp == "both") {
    modes = {Mode{true}, Mode{false}};
  } else {
    modes = {Mode{o.amp == "1"}};
  }
  Bench bench(o);
  for (const Mode& m : modes) bench.warm_up(m);
  for (int round = 1; round <= o.rounds; ++round) {
    for (Mode& m : modes) bench.round(round, m);
  }
  for (const Mode& m : modes) bench.summary(m);
  if (modes.size() == 2) {
    std::cout << fmt::format("{} against fp32 NCHW: ceiling {:.2f}x  real loop {:.2f}x  whole job {:.2f}x\n",
                             bench.name(modes[0]), median(modes[0].ceilings) / median(modes[1].ceilings),
                             median(modes[0].loops) / median(modes[1].loops),
                             median(modes[0].jobs) / median(modes[1].jobs));
  }
  return 0;
}
