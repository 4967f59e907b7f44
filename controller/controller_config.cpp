#include "controller_config.h"

#include <fmt/format.h>

#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"

namespace mlswarm {

namespace {

using cli::in_range;
using cli::setting;

/// Files named by settings, read after parsing.
struct SecretFiles {
  std::string api_token;
  std::string cluster_token;
};

void add_listen_and_discovery(CLI::App& app, ControllerConfig& c, std::string& subnet_text) {
  setting(app, "--host", "CONTROLLER_HOST", c.host, "listen address");
  setting(app, "--port", "CONTROLLER_PORT", c.port, "listen port")->check(in_range(1, 65535));
  setting(app, "--train-port", "TRAIN_PORT", c.train_port, "the port every trainer listens on")
      ->check(in_range(1, 65535));
  setting(app, "--subnet", "SUBNET_TRAIN", subnet_text,
          "where trainers live: CIDR 10.42.0.0/24 or the prefix form 10.42.0; required unless --train-dns is given");
  setting(app, "--train-dns", "TRAIN_DNS", c.dns_name,
          "a name whose A records are trainers, e.g. tasks.ml_train on Swarm; resolved every pass in addition "
          "to the subnet scan");
  setting(app, "--home-dir", "HOME_DIR", c.home_dir, "the shared mount: models/, jobs/, controller/");
  setting(app, "--data-dir", "DATA_DIR", c.data_dir, "where datasets are looked up for /datasets");
  setting(app, "--dataset-cache-mb", "DATASET_CACHE_MB", c.dataset_cache_mb,
          "decoded datasets kept (examples, rollout evaluations), in MB; beyond it the least recently used one "
          "no request holds is dropped (0: no bound)")
      ->check(in_range(0, 1 << 24));
  setting(app, "--scan-interval-ms", "SCAN_INTERVAL_MS", c.scan_interval_ms, "time between discovery passes")
      ->check(in_range(100, 600000));
  setting(app, "--max-misses", "MAX_MISSES", c.max_misses, "scan passes a trainer may miss before it is dropped")
      ->check(in_range(1, 100));
  setting(app, "--max-attempts", "MAX_ATTEMPTS", c.max_attempts,
          "lost attempts of one job (its trainer vanished or restarted) before it fails")
      ->check(in_range(1, 1000));
  setting(app, "--trainer-timeout-ms", "TRAINER_TIMEOUT_MS", c.trainer_timeout_ms,
          "deadline of each whole call to a trainer (dispatch, status, cancel); the connect deadline is a tenth "
          "of it, at least 200 ms")
      ->check(in_range(100, 600000));
  setting(app, "--max-queued-jobs", "MAX_QUEUED_JOBS", c.max_queued_jobs, "queued jobs before /train answers 429")
      ->check(in_range(1, 1000000));
  setting(app, "--max-live-sweeps", "MAX_LIVE_SWEEPS", c.max_live_sweeps,
          "sweeps running at once; POST /sweeps answers 429 beyond")
      ->check(in_range(1, 10000));
  setting(app, "--max-sweep-trials", "MAX_SWEEP_TRIALS", c.max_sweep_trials, "trials one sweep may have (at most 1000)")
      ->check(in_range(1, 1000));
  setting(app, "--advertise-address", "ADVERTISE_ADDRESS", c.advertise,
          "ip[:port] other controller replicas forward writes to; default: the listen host, else this "
          "machine's address in SUBNET_TRAIN");
  setting(app, "--lease-ms", "LEASE_MS", c.lease_ms,
          "replicas: a leader that has not renewed its lease for this long is replaced")
      ->check(in_range(500, 600000));
  setting(app, "--drain-ms", "DRAIN_MS", c.drain_ms,
          "on SIGTERM, how long to keep answering (with /readyz 503) before stopping")
      ->check(in_range(0, 600000));
  setting(app, "--rdzv-port", "RDZV_PORT", c.rendezvous_port,
          "the ranks of a data-parallel job meet on its rank 0's trainer at this port or one of the 63 after it")
      ->check(in_range(1, 65535 - 64));
}

void add_serving(CLI::App& app, ControllerConfig& c, std::string& preload_text) {
  setting(app, "--predict-p99-target-ms", "PREDICT_P99_TARGET_MS", c.predict_p99_target_ms,
          "the p99 of a prediction's time in the batcher that each model's batch size and wait are tuned to")
      ->check(in_range(1, 60000));
  setting(app, "--predict-max-batch", "PREDICT_MAX_BATCH", c.predict_max_batch,
          "the most examples in one forward pass (a bound: the batcher tunes below it); 0 = 64 on the CPU, 1024 "
          "on a GPU")
      ->check(in_range(0, 4096));
  setting(app, "--predict-max-delay-us", "PREDICT_MAX_DELAY_US", c.predict_max_delay_us,
          "the most the first prediction of a batch may wait for others (a bound: the batcher waits only where it "
          "fills batches); -1 = 0 on the CPU, 2000 on a GPU")
      ->check(in_range(-1, 1000000));
  setting(app, "--serve-memory-mb", "SERVE_MEMORY_MB", c.serve_memory_mb,
          "model weights kept loaded for serving; beyond it the least recently used version no request holds is "
          "unloaded; 0 = no bound")
      ->check(in_range(0, 1 << 20));
  setting(app, "--predict-threads", "PREDICT_THREADS", c.predict_threads,
          "LibTorch threads of a forward pass; 0 = the cores divided among the workers")
      ->check(in_range(0, 1024));
  setting(app, "--predict-workers", "PREDICT_WORKERS", c.predict_workers,
          "forward passes run at once, each on its own thread; 0 = one per core (on a GPU, 2)")
      ->check(in_range(0, 64));
  setting(app, "--serve-device", "SERVE_DEVICE", c.serve_device,
          "where models run: auto (CUDA when LibTorch sees a GPU), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  setting(app, "--serve-preload", "SERVE_PRELOAD", preload_text,
          "model ids (commas between) loaded and warmed at start, before /readyz says ready; the models the "
          "deployments pin are always");
  setting(app, "--predict-max-examples", "PREDICT_MAX_EXAMPLES", c.predict_max_examples,
          "examples allowed in one /predict")
      ->check(in_range(1, 1000000));
  setting(app, "--predict-max-values", "PREDICT_MAX_VALUES", c.predict_max_values,
          "numbers (and other values) in one /predict or v2 JSON body, counted while parsing: a larger body is "
          "refused (413) at that count, before it costs more")
      ->check(in_range(1024, 1L << 30));
  setting(app, "--max-image-pixels", "MAX_IMAGE_PIXELS", c.max_image_pixels,
          "the largest width x height /classify decodes; larger uploads are refused before decoding")
      ->check(in_range(1, std::int64_t{4096} * 4096));
  setting(app, "--max-decodes", "MAX_DECODES", c.max_decodes, "/classify images decoded at once; 0 = one per core")
      ->check(in_range(0, 1024));
  add_http_settings(app, c.http);
  setting(app, "--max-body", "MAX_BODY", c.max_body,
          "largest /predict or /classify body, in bytes (other routes take at most 64 KiB)")
      ->check(in_range(1024, std::int64_t{1} << 32));
}

void add_security(CLI::App& app, ControllerConfig& c, SecretFiles& files) {
  setting(app, "--api-token-file", "API_TOKEN_FILE", files.api_token,
          "file holding the bearer token clients must send, e.g. /run/secrets/mlswarm_api_token; unset = open");
  cli::switch_setting(app, "--public-reads", "PUBLIC_READS", c.public_reads,
                      "with a token, leave GET /status, /jobs, /models, /datasets and /metrics open");
  setting(app, "--cluster-token-file", "CLUSTER_TOKEN_FILE", files.cluster_token,
          "file holding the key that signs every call to a trainer and that trainers prove they hold");
  setting(app, "--tls-cert-file", "TLS_CERT_FILE", c.tls_cert_file, "PEM certificate: serve HTTPS instead of HTTP");
  setting(app, "--tls-key-file", "TLS_KEY_FILE", c.tls_key_file, "PEM private key for --tls-cert-file");
}

/// SERVE_PRELOAD's comma list as model ids (empty items skipped); Error naming the one that is not.
std::vector<std::string> parse_preload(const std::string& text) {
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t comma = std::min(text.find(',', i), text.size());
    const std::string id = text.substr(i, comma - i);
    if (!id.empty()) {
      if (!is_valid_id(id)) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("SERVE_PRELOAD (--serve-preload): '{}' is not a model id", id));
      }
      ids.push_back(id);
    }
    i = comma + 1;
  }
  return ids;
}

/// What parsing alone cannot check: the TLS pair, the secret files, the subnet, the preload list.
std::optional<cli::ParseExit> complete(ControllerConfig& c, const SecretFiles& files, const std::string& subnet_text,
                                       const std::string& preload_text) {
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return cli::config_error("ml_controller",
                             "TLS needs both TLS_CERT_FILE (--tls-cert-file) and TLS_KEY_FILE "
                             "(--tls-key-file)");
  }
  try {
    if (!files.api_token.empty()) c.api_token = read_token_file(files.api_token, "API_TOKEN_FILE");
    if (!files.cluster_token.empty()) c.cluster_token = read_token_file(files.cluster_token, "CLUSTER_TOKEN_FILE");
    const bool one_shot = c.healthcheck || !c.fetch_url.empty();
    if (!one_shot && (!subnet_text.empty() || c.dns_name.empty())) c.subnet = parse_subnet(subnet_text);
    c.serve_preload = parse_preload(preload_text);
  } catch (const Error& e) {
    return cli::config_error("ml_controller", e.what());
  }
  return std::nullopt;
}

}  // namespace

std::variant<ControllerConfig, cli::ParseExit> parse_controller_config(int argc, const char* const* argv,
                                                                       const std::function<std::string()>& version) {
  ControllerConfig c;
  std::string subnet_text;
  std::string preload_text;
  SecretFiles files;
  CLI::App app{
      "ml_controller: the mlswarm controller. Finds trainers by scanning SUBNET_TRAIN,\n"
      "dispatches training jobs to them, keeps a journal of every job under HOME_DIR/controller,\n"
      "and serves /predict and /classify from HOME_DIR/models.\n"
      "Every setting is a flag or its environment variable; the flag wins.",
      "ml_controller"};
  app.set_version_flag("--version", version, "print the version, git commit, LibTorch version and CUDA availability");
  add_listen_and_discovery(app, c, subnet_text);
  add_serving(app, c, preload_text);
  cli::logging_settings(app, c.log_level, c.log_format);
  add_security(app, c, files);
  app.add_flag("--healthcheck", c.healthcheck,
               "probe GET /healthz of the controller on this port at 127.0.0.1 and exit 0 if healthy");
  app.add_option("--fetch", c.fetch_url,
                 "GET http://HOST:PORT/PATH with the API token, print the body and exit (curl for images that have "
                 "none: docker exec ... --fetch http://10.42.0.5:48516/status)");
  if (auto exit = cli::parse(app, argc, argv)) return *exit;
  if (auto exit = complete(c, files, subnet_text, preload_text)) return *exit;
  return c;
}

}  // namespace mlswarm
