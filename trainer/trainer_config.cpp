#include "trainer_config.h"

#include "mlswarm/auth.h"
#include "mlswarm/error.h"

namespace mlswarm {

namespace {

/// How jobs run and stop: shutdown report, data-parallel timeout, versions kept, precision.
void add_job_settings(CLI::App& app, TrainerConfig& c) {
  using cli::in_range;
  using cli::setting;
  setting(app, "--shutdown-report-ms", "SHUTDOWN_REPORT_MS", c.shutdown_report_ms,
          "on SIGTERM, how long to keep answering /status after the jobs stopped, until the controller read it")
      ->check(in_range(0, 60000));
  setting(app, "--dist-timeout-ms", "DIST_TIMEOUT_MS", c.dist_timeout_ms,
          "how long a rank of a data-parallel job waits for its peers (to join, in a collective) before the job "
          "fails lost_peer")
      ->check(in_range(1000, 3600000));
  setting(app, "--keep-versions", "KEEP_VERSIONS", c.keep_versions,
          "each epoch's weights are also kept as models/<id>/versions/<epoch>/ for clients that pin a version; "
          "how many of the newest to keep")
      ->check(in_range(1, 100000));
  setting(app, "--train-amp", "TRAIN_AMP", c.train_amp,
          "on a CUDA device, 1: bf16 mixed precision and channels-last convolutions; 0: fp32, NCHW (the CPU always "
          "trains in fp32)")
      ->check(in_range(0, 1));
  setting(app, "--train-cpu-channels-last", "TRAIN_CPU_CHANNELS_LAST", c.train_cpu_channels_last,
          "on the CPU, 1: channels-last convolutions for conv nets on one trainer (faster); 0: NCHW")
      ->check(in_range(0, 1));
}

}  // namespace

std::variant<TrainerConfig, cli::ParseExit> parse_trainer_config(int argc, const char* const* argv,
                                                                 const std::function<std::string()>& version) {
  using cli::in_range;
  using cli::setting;
  TrainerConfig c;
  std::string cluster_token_file;
  CLI::App app{
      "ml_trainer: the mlswarm training daemon. Runs training jobs (LibTorch) on worker\n"
      "threads, writes checkpoints under HOME_DIR and reports jobs at GET /status.\n"
      "Every setting is a flag or its environment variable; the flag wins.",
      "ml_trainer"};
  app.set_version_flag("--version", version, "print the version, git commit, LibTorch version and CUDA availability");
  setting(app, "--host", "TRAIN_HOST", c.host, "listen address");
  setting(app, "--port", "TRAIN_PORT", c.port, "listen port, the same on every trainer")->check(in_range(1, 65535));
  setting(app, "--home-dir", "HOME_DIR", c.home_dir, "shared mount: models/, jobs/ (checkpoints), datasets/");
  setting(app, "--data-dir", "DATA_DIR", c.data_dir,
          "where datasets are looked up first, e.g. fashion-mnist/ from the Debian package");
  setting(app, "--dataset-cache-mb", "DATASET_CACHE_MB", c.dataset_cache_mb,
          "decoded datasets kept between jobs, in MB; beyond it the least recently used one no job holds is "
          "dropped (0: no bound)")
      ->check(in_range(0, 1 << 24));
  setting(app, "--workers", "TRAIN_WORKERS", c.workers, "jobs that train at once; more wait in order")
      ->check(in_range(1, 64));
  setting(app, "--threads", "TRAIN_THREADS", c.threads, "LibTorch intra-op threads, 0 = one per core")
      ->check(in_range(0, 1024));
  setting(app, "--max-body", "MAX_BODY", c.max_body, "largest request body accepted, in bytes")
      ->check(in_range(1024, std::int64_t{1} << 30));
  add_http_settings(app, c.http);
  cli::logging_settings(app, c.log_level, c.log_format);
  setting(app, "--cluster-token-file", "CLUSTER_TOKEN_FILE", cluster_token_file,
          "file holding the key the controller signs its calls with, e.g. /run/secrets/mlswarm_cluster_token; "
          "with it, POST /train and DELETE /jobs need a valid signature; unset = open");
  setting(app, "--advertise-address", "TRAIN_ADVERTISE_ADDRESS", c.advertise,
          "ip:port the controller dials, when a port forward stands in front of this trainer; the cluster key's "
          "proofs and signed calls are accepted for it as well as for the address a call arrives on");
  add_job_settings(app, c);
  app.add_flag("--healthcheck", c.healthcheck,
               "probe GET /healthz of the trainer on this port at 127.0.0.1 and exit 0 if healthy (Docker's "
               "HEALTHCHECK)");
  app.add_option("--fetch", c.fetch_url,
                 "GET http://HOST:PORT/PATH, print the body and exit (curl for images that have none: "
                 "docker exec ... --fetch http://10.42.0.5:48516/status)");
  if (auto exit = cli::parse(app, argc, argv)) return *exit;
  try {
    if (!cluster_token_file.empty()) c.cluster_token = read_token_file(cluster_token_file, "CLUSTER_TOKEN_FILE");
  } catch (const Error& e) {
    return cli::config_error("ml_trainer", e.what());
  }
  return c;
}

}  // namespace mlswarm
