// ml_trainer: runs training jobs on worker threads and reports them through GET /status.

#include <filesystem>
#include <variant>

#include <spdlog/spdlog.h>

#include "job_runner.h"
#include "mlswarm/allocator.h"
#include "mlswarm/daemon.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/error.h"
#include "mlswarm/http_client.h"
#include "mlswarm/http_server.h"
#include "mlswarm/log.h"
#include "mlswarm/version.h"
#include "status_board.h"
#include "trainer_api.h"
#include "trainer_config.h"
#include "training.h"

namespace mlswarm {
namespace {

/// Serves until SIGTERM; returns the exit code.
int run_trainer(const TrainerConfig& c) {
  const std::string allocator = tune_allocator_for_tensors();
  set_training_threads(c.threads);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(c.home_dir) / "models", ec);
  std::filesystem::create_directories(std::filesystem::path(c.home_dir) / "jobs", ec);
  if (ec) {
    spdlog::error("cannot create {}/models and {}/jobs: {}", c.home_dir, c.home_dir, ec.message());
    return 1;
  }
  const std::string address = c.host + ":" + std::to_string(c.port);
  DatasetCache datasets(c.data_dir, c.home_dir, static_cast<std::size_t>(c.dataset_cache_mb) << 20);
  StatusBoard board;
  TrainingEnv env{c.home_dir,      &datasets,        std::chrono::milliseconds(c.dist_timeout_ms),
                  c.keep_versions, c.train_amp == 1, c.train_cpu_channels_last == 1};
  JobRunner runner(
      board, [&env](const JobSpec& spec, const TrainingHooks& hooks) { return run_training(spec, env, hooks); },
      JobRunnerOptions{c.workers, 256, address});
  TrainerApi api(runner, board, address, c.cluster_token, c.advertise, c.home_dir);
  HttpServerOptions http = c.http.apply({});
  http.max_body_bytes = c.max_body;
  HttpServer server(api.service(), http);
  server.bind(c.host, c.port);
  spdlog::info("ml_trainer listening on {} (workers {}, device {}, HOME_DIR {}, DATA_DIR {}, cluster key {}; {})",
               address, c.workers, best_device(), c.home_dir, c.data_dir, c.cluster_token.empty() ? "off" : "on",
               allocator);
  serve_until_stop_signal(server, [&] {
    // Jobs checkpoint at their next batch and report "interrupted" while the server still
    // answers, so the controller re-queues them at its next poll instead of after missed scans.
    const bool had_jobs = runner.active_count() > 0;
    api.start_draining();
    runner.shutdown();
    board.flush();
    if (had_jobs) {
      const bool read = api.wait_for_status_read(std::chrono::milliseconds(c.shutdown_report_ms));
      spdlog::info("jobs stopped and checkpointed; {}",
                   read ? "the controller has read that they were interrupted" : "no controller read /status in time");
    }
  });
  runner.shutdown();
  board.stop();
  spdlog::info("ml_trainer stopped");
  return 0;
}

}  // namespace
}  // namespace mlswarm

int main(int argc, char** argv) {
  using namespace mlswarm;
  auto parsed = parse_trainer_config(argc, argv, [] { return version_text("ml_trainer"); });
  if (auto* exit = std::get_if<cli::ParseExit>(&parsed)) return cli::finish(*exit);
  const TrainerConfig& config = std::get<TrainerConfig>(parsed);
  if (auto code = run_one_shot({config.fetch_url, {}, config.healthcheck, config.port, false})) return *code;
  catch_stop_signals();
  init_logging(config.log_level, config.log_format, "ml_trainer");
  try {
    return run_trainer(config);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
