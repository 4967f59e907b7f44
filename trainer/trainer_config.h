#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <variant>

#include "mlswarm/cli.h"
#include "mlswarm/http_settings.h"
#include "mlswarm/ports.h"

namespace mlswarm {

/// Every setting of ml_trainer. Each comes from its flag or, when the flag is absent, from
/// its environment variable (named in --help), validated by the same rules.
struct TrainerConfig {
  std::string host = "0.0.0.0";                  ///< TRAIN_HOST
  int port = kDefaultTrainPort;                  ///< TRAIN_PORT
  std::string home_dir = "./var";                ///< HOME_DIR
  std::string data_dir = "/usr/share/datasets";  ///< DATA_DIR
  int dataset_cache_mb = 4096;                   ///< DATASET_CACHE_MB: decoded datasets kept (0: no bound)
  int workers = 1;                               ///< TRAIN_WORKERS
  int threads = 0;                               ///< TRAIN_THREADS, 0 = one per core
  std::size_t max_body = 1u << 20;               ///< MAX_BODY
  HttpSettings http;                             ///< the HTTP edge: HTTP_THREADS, REQUEST_TIMEOUT_S, HTTP_*
  std::string log_level = "info";                ///< LOG_LEVEL
  std::string log_format = "text";               ///< LOG_FORMAT
  std::string cluster_token;                     ///< read from CLUSTER_TOKEN_FILE
  /// "ip:port" the controller dials when that is not the address the connection arrives on
  /// (a port forward in front of the trainer); proofs and signed calls are accepted for it
  /// too (TRAIN_ADVERTISE_ADDRESS). Empty: only for the address the call arrived on.
  std::string advertise;
  /// On SIGTERM, how long the trainer keeps answering /status after its jobs stopped, until
  /// the controller has read that they were interrupted (SHUTDOWN_REPORT_MS).
  int shutdown_report_ms = 3000;
  /// How long a rank of a data-parallel job waits for its peers before the job fails
  /// (DIST_TIMEOUT_MS).
  int dist_timeout_ms = 30000;
  /// Pinned versions kept per model: models/<id>/versions/<n>/ (KEEP_VERSIONS).
  int keep_versions = 5;
  /// On CUDA: bf16 mixed precision and channels-last convolutions (TRAIN_AMP, 1 = on); the
  /// CPU always trains in fp32.
  int train_amp = 1;
  /// On the CPU: channels-last convolutions (TRAIN_CPU_CHANNELS_LAST, 1 = on).
  int train_cpu_channels_last = 1;

  // One-shot commands instead of serving.
  bool healthcheck = false;
  std::string fetch_url;
};

/// Parses argv and the environment. Returns the configuration, or how to exit (help and
/// --version: 0; a bad value: 2 with a message naming the flag and its variable).
std::variant<TrainerConfig, cli::ParseExit> parse_trainer_config(int argc, const char* const* argv,
                                                                 const std::function<std::string()>& version);

}  // namespace mlswarm
