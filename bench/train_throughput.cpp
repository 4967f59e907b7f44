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
  int batch = 128, rounds = 3, threads = 0, amp = 1;
  std::int64_t examples = 60000;
  CLI::App app{"mlswarm training-throughput benchmark (Fashion-MNIST)"};
  app.add_option("--data-dir", data_dir, "DATA_DIR holding fashion-mnist/")->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--model-type", model_type, "convnet or mlp")->capture_default_str();
  app.add_option("--batch-size", batch)->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of (ceiling, one real epoch)")->capture_default_str();
  app.add_option("--examples", examples, "training images per epoch")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads, 0 = one per core")->capture_default_str();
  app.add_option("--amp", amp, "on CUDA, 1: bf16 autocast and channels-last (the trainer's default), 0: fp32 NCHW")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  set_training_threads(threads);

  const auto home = std::filesystem::temp_directory_path() / fmt::format("mlswarm-bench-{}", ::getpid());
  DatasetCache cache(data_dir, home);
  TrainingEnv env{home, &cache};
  env.cuda_fast_path = amp == 1;
  auto spec_for = [&](int round) {
    auto id = fmt::format("bench-{}", round);
    return parse_job_spec({{"job_id", id},
                           {"model_id", id},
                           {"model_type", model_type},
                           {"example_idxs", {0, examples}},
                           {"train_opts", {{"epochs", 1}, {"batch_size", batch}, {"device", device}}}});
  };
  cache.get("fashion-mnist");  // read the files once, outside every timing
  const int steps = static_cast<int>(examples / batch);
  resident_batch_images_per_s(spec_for(0), env, 100);  // warm-up: thread pool, allocator, clocks

  std::vector<double> ceilings, loops, jobs, ratios;
  JobProgress last;
  for (int round = 1; round <= rounds; ++round) {
    double ceiling = resident_batch_images_per_s(spec_for(round), env, steps);
    TrainingHooks hooks{[&](const JobProgress& p) { last = p; }, [] { return false; }};
    auto t0 = std::chrono::steady_clock::now();
    run_training(spec_for(round), env, hooks);
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ceilings.push_back(ceiling);
    loops.push_back(last.images_per_s);
    jobs.push_back(static_cast<double>(examples) / wall);
    ratios.push_back(last.images_per_s / ceiling);
    std::cout << fmt::format("round {}: ceiling {:.0f}  real loop {:.0f}  ratio {:.3f}\n", round, ceiling,
                             last.images_per_s, ratios.back());
  }
  std::filesystem::remove_all(home);

  const double ceiling = median(ceilings), loop = median(loops), job = median(jobs);
  std::cout << fmt::format(
      "device {}  model {}  batch {}  threads {}  amp+channels-last {}  medians of {} rounds\n"
      "ceiling   (one resident batch, {} steps):                {:>8.0f} images/s\n"
      "trainer   (real loop, one epoch of {} images):          {:>8.0f} images/s  ratio {:.3f}\n"
      "whole job (+ tensor prep, test-set eval, checkpoints):  {:>8.0f} images/s  ratio {:.3f}\n"
      "test accuracy after one epoch {:.4f}\n",
      last.device, model_type, batch, threads, last.device == "cuda" && amp == 1 ? "on" : "off", rounds, steps, ceiling, examples, loop, median(ratios), job,
      job / ceiling, last.accuracy.value_or(0));
  return 0;
}
