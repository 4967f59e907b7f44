// ml_trainer: runs training jobs on worker threads and reports them through GET /status.

#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "mlswarm/dataset_cache.h"
#include "job_runner.h"
#include "mlswarm/auth.h"
#include "mlswarm/cli_flags.h"
#include "mlswarm/config.h"
#include "mlswarm/daemon.h"
#include "mlswarm/error.h"
#include "mlswarm/http_server.h"
#include "mlswarm/log.h"
#include "status_board.h"
#include "trainer_api.h"
#include "training.h"

int main(int argc, char** argv) {
  using namespace mlswarm;
  std::string host, home_dir, data_dir, log_level, log_format, cluster_token_file;
  int port = 0, workers = 1, threads = 0;
  std::size_t max_body = 1u << 20;
  bool healthcheck = false;
  std::string fetch_url;

  CLI::App app{"ml_trainer: the mlswarm training daemon. Runs training jobs (LibTorch) on worker\n"
               "threads, writes checkpoints under HOME_DIR and reports jobs at GET /status.\n"
               "Settings come from the environment; a flag overrides its variable."};
  try {
    host = env_or("TRAIN_HOST", "0.0.0.0");
    port = env_int_or("TRAIN_PORT", 48516);
    home_dir = env_or("HOME_DIR", "./var");
    data_dir = env_or("DATA_DIR", "/usr/share/datasets");
    workers = env_int_or("TRAIN_WORKERS", 1);
    threads = env_int_or("TRAIN_THREADS", 0);
    log_level = env_or("LOG_LEVEL", "info");
    log_format = env_or("LOG_FORMAT", "text");
    cluster_token_file = env_or("CLUSTER_TOKEN_FILE", "");
  } catch (const Error& e) {
    std::fprintf(stderr, "ml_trainer: %s\n", e.what());
    return 2;
  }
  app.add_option("--host", host, "listen address (TRAIN_HOST)")->capture_default_str();
  app.add_option("--port", port, "listen port, the same on every trainer (TRAIN_PORT)")
      ->check(CLI::Range(1, 65535))->capture_default_str();
  app.add_option("--home-dir", home_dir,
                 "shared mount: models/, jobs/ (checkpoints), datasets/ (HOME_DIR)")->capture_default_str();
  app.add_option("--data-dir", data_dir,
                 "where datasets are looked up first, e.g. fashion-mnist/ from the Debian package (DATA_DIR)")
      ->capture_default_str();
  app.add_option("--workers", workers, "jobs that train at once; more wait in order (TRAIN_WORKERS)")
      ->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--threads", threads, "LibTorch intra-op threads, 0 = one per core (TRAIN_THREADS)")
      ->check(CLI::Range(0, 1024))->capture_default_str();
  app.add_option("--max-body", max_body, "largest request body accepted, in bytes")->capture_default_str();
  add_logging_flags(app, log_level, log_format);
  app.add_option("--cluster-token-file", cluster_token_file,
                 "file holding the token the controller sends; POST /train and DELETE /jobs need it, "
                 "e.g. /run/secrets/mlswarm_cluster_token; unset = open (CLUSTER_TOKEN_FILE)");
  app.add_flag("--healthcheck", healthcheck,
               "probe GET /healthz of the trainer on this port at 127.0.0.1 and exit 0 if healthy "
               "(for Docker's HEALTHCHECK)");
  app.add_option("--fetch", fetch_url,
                 "GET http://HOST:PORT/PATH, print the body and exit (curl for images that have none: "
                 "docker exec ... --fetch http://10.42.0.5:48516/status)");
  CLI11_PARSE(app, argc, argv);

  std::string cluster_token;
  try {
    if (!cluster_token_file.empty()) cluster_token = read_token_file(cluster_token_file, "CLUSTER_TOKEN_FILE");
  } catch (const Error& e) {
    std::fprintf(stderr, "ml_trainer: %s\n", e.what());
    return 2;
  }
  if (!fetch_url.empty()) return fetch_and_print(fetch_url, cluster_token);

  if (healthcheck) {
    return http_probe("127.0.0.1", port, "/healthz", std::chrono::milliseconds(2000)) == 200 ? 0 : 1;
  }

  catch_stop_signals();
  init_logging(log_level, log_format, "ml_trainer");
  set_training_threads(threads);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(home_dir) / "models", ec);
  std::filesystem::create_directories(std::filesystem::path(home_dir) / "jobs", ec);
  if (ec) {
    spdlog::error("cannot create {}/models and {}/jobs: {}", home_dir, home_dir, ec.message());
    return 1;
  }

  const std::string address = host + ":" + std::to_string(port);
  DatasetCache datasets(data_dir, home_dir);
  StatusBoard board;
  TrainingEnv env{home_dir, &datasets};
  JobRunner runner(
      board, [&env](const JobSpec& spec, const TrainingHooks& hooks) { return run_training(spec, env, hooks); },
      JobRunnerOptions{workers, 256, address});
  TrainerApi api(runner, board, address, cluster_token);

  HttpServerOptions http_options;
  http_options.max_body_bytes = max_body;
  HttpServer server([&api](const HttpRequest& request) { return api.handle(request); }, http_options);
  try {
    server.bind(host, port);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }

  spdlog::info("ml_trainer listening on {} (workers {}, device {}, HOME_DIR {}, DATA_DIR {}, cluster token {})",
               address, workers, best_device(), home_dir, data_dir, cluster_token.empty() ? "off" : "on");
  serve_until_stop_signal(server);
  // The HTTP server has stopped; let running jobs checkpoint at their next batch and join.
  runner.shutdown();
  board.stop();
  spdlog::info("ml_trainer stopped");
  return 0;
}
