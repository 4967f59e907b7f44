#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "mlswarm/cli.h"
#include "mlswarm/http_settings.h"
#include "subnet.h"
#include "mlswarm/ports.h"

namespace mlswarm {

/// Every setting of ml_controller. Each comes from its flag or, when the flag is absent,
/// from its environment variable (named in --help), validated by the same rules.
struct ControllerConfig {
  std::string host = "0.0.0.0";                  ///< CONTROLLER_HOST
  int port = kDefaultControllerPort;             ///< CONTROLLER_PORT
  int train_port = kDefaultTrainPort;            ///< TRAIN_PORT
  std::optional<Subnet> subnet;                  ///< SUBNET_TRAIN; at least one of subnet and dns_name is set
  std::string dns_name;                          ///< TRAIN_DNS
  std::string home_dir = "./var";                ///< HOME_DIR
  std::string data_dir = "/usr/share/datasets";  ///< DATA_DIR
  int dataset_cache_mb = 4096;                   ///< DATASET_CACHE_MB: decoded datasets kept (0: no bound)
  int scan_interval_ms = 2000;                   ///< SCAN_INTERVAL_MS
  int max_misses = 3;                            ///< MAX_MISSES
  int max_attempts = 5;                          ///< MAX_ATTEMPTS
  int predict_p99_target_ms = 10;                ///< PREDICT_P99_TARGET_MS: what the batcher tunes to
  int predict_max_batch = 0;                     ///< PREDICT_MAX_BATCH: a bound (0: 64 on the CPU, 1024 on a GPU)
  int predict_max_delay_us = -1;                 ///< PREDICT_MAX_DELAY_US: a bound (-1: 0 on the CPU, 2000 on a GPU)
  int serve_memory_mb = 2048;                    ///< SERVE_MEMORY_MB: model weights kept loaded (0: no bound)
  int predict_threads = 0;                       ///< PREDICT_THREADS (0: the cores divided among the workers)
  int predict_workers = 0;                       ///< PREDICT_WORKERS (0: one per core)
  std::string serve_device = "auto";             ///< SERVE_DEVICE: auto, cpu, cuda
  std::vector<std::string> serve_preload;        ///< SERVE_PRELOAD: model ids warmed before /readyz (commas)
  int predict_max_examples = 1024;               ///< PREDICT_MAX_EXAMPLES
  long predict_max_values = 1L << 22;            ///< PREDICT_MAX_VALUES
  int max_live_sweeps = 16;                      ///< MAX_LIVE_SWEEPS
  int max_sweep_trials = 256;                    ///< MAX_SWEEP_TRIALS
  std::int64_t max_image_pixels = 2048 * 2048;   ///< MAX_IMAGE_PIXELS
  int max_decodes = 0;                           ///< MAX_DECODES (0: one per core)
  /// The HTTP edge (HTTP_THREADS, REQUEST_TIMEOUT_S, HTTP_*): 128 workers, since /predict
  /// handlers wait for the batcher.
  HttpSettings http{[] {
    HttpServerOptions o;
    o.threads = 128;
    return o;
  }()};
  std::size_t max_body = 64u << 20;              ///< MAX_BODY: /predict and /classify; other routes have smaller caps
  std::string log_level = "info";                ///< LOG_LEVEL
  std::string log_format = "text";               ///< LOG_FORMAT
  std::string api_token;                         ///< read from API_TOKEN_FILE
  bool public_reads = false;                     ///< PUBLIC_READS
  std::string cluster_token;                     ///< read from CLUSTER_TOKEN_FILE
  std::string tls_cert_file;                     ///< TLS_CERT_FILE
  std::string tls_key_file;                      ///< TLS_KEY_FILE
  int trainer_timeout_ms = 3000;                 ///< TRAINER_TIMEOUT_MS
  int max_queued_jobs = 1000;                    ///< MAX_QUEUED_JOBS
  int rendezvous_port = kDefaultRendezvousPort;  ///< RDZV_PORT: data-parallel jobs meet here (and the next 63 ports)
  std::string advertise;                         ///< ADVERTISE_ADDRESS: where other replicas reach this one
  int lease_ms = 2000;                           ///< LEASE_MS: a leader silent this long is replaced
  int drain_ms = 5000;                           ///< DRAIN_MS: on SIGTERM, how long to keep answering

  // One-shot commands instead of serving.
  bool healthcheck = false;
  std::string fetch_url;
};

/// Parses argv and the environment. Returns the configuration, or how to exit (help and
/// --version: 0; a bad value: 2 with a message naming the flag and its variable).
/// `version` produces the --version text.
std::variant<ControllerConfig, cli::ParseExit> parse_controller_config(int argc, const char* const* argv,
                                                                       const std::function<std::string()>& version);

}  // namespace mlswarm
