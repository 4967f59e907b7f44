// Training throughput: the trainer's real loop (resident dataset, per-epoch shuffle, batch
// gather, forward, backward, step, progress reports) next to its ceiling, the same model and
// optimiser stepping on one resident batch. Both run in this process, on the same device and
// thread count, alternating round by round so that drift in what a shared machine gives us
// hits both sides alike.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/allocator.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/job.h"
#include "training.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mlswarm;
  std::string data_dir = "/usr/share/datasets";
  std::string device = "auto";
  std::string model_type = "convnet";
  std::string amp = "both";
  int batch = 128, rounds = 3, threads = 0;
  std::int64_t examples = 60000;
  CLI::App app{"mlswarm training-throughput benchmark (Fashion-MNIST)"};
  app.add_option("--data-dir", data_dir, "DATA_DIR holding fashion-mnist/")->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--model-type", model_type, "convnet, resnet or mlp")->capture_default_str();
  app.add_option("--batch-size", batch)->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of (ceiling, one real epoch) per mode")->capture_default_str();
  app.add_option("--examples", examples, "training images per epoch")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads, 0 = one per core")->capture_default_str();
  app.add_option("--fast-path,--amp", amp,
                 "1: the fast path (on CUDA bf16 autocast and channels-last, TRAIN_AMP; on the CPU fp32 "
                 "channels-last, TRAIN_CPU_CHANNELS_LAST), 0: fp32 NCHW, both: the two alternating round by round")
      ->check(CLI::IsMember({"0", "1", "both"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::cout << tune_allocator_for_tensors() << " (as ml_trainer)\n";
  spdlog::set_level(spdlog::level::warn);
  set_training_threads(threads);

  const std::string used_device = device == "auto" ? best_device() : device;
  struct Mode {
    explicit Mode(bool f) : fast(f) {}
    bool fast;
    std::vector<double> ceilings, loops, jobs, ratios;
    JobProgress last;
  };
  std::vector<Mode> modes;
  if (amp == "both") {
    modes = {Mode{true}, Mode{false}};
  } else {
    modes = {Mode{amp == "1"}};
  }

  const auto home = std::filesystem::temp_directory_path() / fmt::format("mlswarm-bench-{}", ::getpid());
  DatasetCache cache(data_dir, home);
  TrainingEnv env{home, &cache};
  int jobs_run = 0;
  auto spec_for = [&] {
    auto id = fmt::format("bench-{}", jobs_run++);
    return parse_job_spec({{"job_id", id},
                           {"model_id", id},
                           {"model_type", model_type},
                           {"example_idxs", {0, examples}},
                           {"train_opts", {{"epochs", 1}, {"batch_size", batch}, {"device", device}}}});
  };
  cache.get("fashion-mnist");  // read the files once, outside every timing
  const int steps = static_cast<int>(examples / batch);
  auto use = [&](const Mode& m) {
    env.cuda_fast_path = m.fast;
    env.cpu_channels_last = m.fast;
  };
  for (Mode& m : modes) {  // warm-up: thread pool, allocator, clocks, cuDNN's choices for each mode
    use(m);
    resident_batch_images_per_s(spec_for(), env, 100);
  }

  const bool cuda = used_device == "cuda";
  auto name = [&](const Mode& m) { return !m.fast ? "fp32 NCHW" : cuda ? "bf16+channels-last" : "fp32 channels-last"; };
  for (int round = 1; round <= rounds; ++round) {
    for (Mode& m : modes) {
      use(m);
      double ceiling = resident_batch_images_per_s(spec_for(), env, steps);
      TrainingHooks hooks{[&](const JobProgress& p) { m.last = p; }, [] { return false; }};
      auto t0 = std::chrono::steady_clock::now();
      run_training(spec_for(), env, hooks);
      double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      m.ceilings.push_back(ceiling);
      m.loops.push_back(m.last.images_per_s);
      m.jobs.push_back(static_cast<double>(examples) / wall);
      m.ratios.push_back(m.last.images_per_s / ceiling);
      std::cout << fmt::format("round {} {}: ceiling {:.0f}  real loop {:.0f}  ratio {:.3f}\n", round, name(m), ceiling,
                               m.last.images_per_s, m.ratios.back());
    }
  }
  std::filesystem::remove_all(home);

  for (const Mode& m : modes) {
    const double ceiling = median(m.ceilings), loop = median(m.loops), job = median(m.jobs);
    std::cout << fmt::format(
        "device {}  model {}  batch {}  threads {}  {}  medians of {} rounds\n"
        "ceiling   (one resident batch, {} steps):                {:>8.0f} images/s\n"
        "trainer   (real loop, one epoch of {} images):          {:>8.0f} images/s  ratio {:.3f}\n"
        "whole job (+ tensor prep, test-set eval, checkpoints):  {:>8.0f} images/s  ratio {:.3f}\n"
        "test accuracy after one epoch {:.4f}\n",
        m.last.device, model_type, batch, threads, name(m), rounds, steps, ceiling, examples, loop, median(m.ratios),
        job, job / ceiling, m.last.accuracy.value_or(0));
  }
  if (modes.size() == 2) {
    std::cout << fmt::format("{} against fp32 NCHW: ceiling {:.2f}x  real loop {:.2f}x  whole job {:.2f}x\n",
                             name(modes[0]), median(modes[0].ceilings) / median(modes[1].ceilings),
                             median(modes[0].loops) / median(modes[1].loops),
                             median(modes[0].jobs) / median(modes[1].jobs));
  }
  return 0;
}
