// Training throughput: the trainer's real loop (resident dataset, per-epoch shuffle,
// batch gather, forward, backward, step, progress reports, evaluation and checkpoints)
// next to its ceiling, the same model and optimiser stepping on one resident batch.
// Both run in this process, on the same device, with the same thread count.

#include <chrono>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "dataset_cache.h"
#include "mlswarm/job.h"
#include "training.h"

int main(int argc, char** argv) {
  using namespace mlswarm;
  std::string data_dir = "/usr/share/datasets";
  std::string device = "auto";
  std::string model_type = "convnet";
  int batch = 128, epochs = 1, threads = 0, ceiling_steps = 200;
  std::int64_t examples = 60000;
  CLI::App app{"mlswarm training-throughput benchmark (Fashion-MNIST)"};
  app.add_option("--data-dir", data_dir, "DATA_DIR holding fashion-mnist/")->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--model-type", model_type, "convnet or mlp")->capture_default_str();
  app.add_option("--batch-size", batch)->capture_default_str();
  app.add_option("--epochs", epochs)->capture_default_str();
  app.add_option("--examples", examples, "training images per epoch")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads, 0 = one per core")->capture_default_str();
  app.add_option("--ceiling-steps", ceiling_steps)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  set_training_threads(threads);

  const auto home = std::filesystem::temp_directory_path() / fmt::format("mlswarm-bench-{}", ::getpid());
  DatasetCache cache(data_dir, home);
  TrainingEnv env{home, &cache};
  JobSpec spec = parse_job_spec({{"job_id", "bench"},
                                 {"model_id", "bench"},
                                 {"model_type", model_type},
                                 {"example_idxs", {0, examples}},
                                 {"train_opts", {{"epochs", epochs}, {"batch_size", batch}, {"device", device}}}});
  cache.get(spec.dataset);  // read the files once, outside both timings

  const double ceiling = resident_batch_images_per_s(spec, env, ceiling_steps);

  TrainingProgress last;
  TrainingHooks hooks{[&](const TrainingProgress& p) { last = p; }, [] { return false; }};
  auto t0 = std::chrono::steady_clock::now();
  run_training(spec, env, hooks);
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::filesystem::remove_all(home);

  const double loop = last.images_per_s;
  const double end_to_end = static_cast<double>(examples) * epochs / wall;
  std::cout << fmt::format(
      "device {}  model {}  batch {}  threads {}\n"
      "ceiling   (one resident batch, {} steps):         {:>10.0f} images/s\n"
      "trainer   (real loop, last epoch of {} x {}):     {:>10.0f} images/s  = {:.3f} of ceiling\n"
      "whole job (incl. tensor prep, eval, checkpoints): {:>10.0f} images/s  = {:.3f} of ceiling\n"
      "final test accuracy {:.4f}\n",
      last.device, model_type, batch, threads, ceiling_steps, ceiling, epochs, examples, loop,
      loop / ceiling, end_to_end, end_to_end / ceiling, last.accuracy.value_or(0));
  return 0;
}
