// ml_controller: discovers trainers, dispatches jobs to them, keeps every job, and serves
// predictions from the models trainers write to HOME_DIR.

#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "cluster.h"
#include "controller_api.h"
#include "job_registry.h"
#include "mlswarm/auth.h"
#include "mlswarm/cli_flags.h"
#include "mlswarm/config.h"
#include "mlswarm/daemon.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/error.h"
#include "mlswarm/http_server.h"
#include "mlswarm/log.h"
#include "model_server.h"
#include "subnet.h"

int main(int argc, char** argv) {
  using namespace mlswarm;
  std::string host, subnet_text, dns_name, home_dir, data_dir, log_level, log_format;
  std::string api_token_file, cluster_token_file, tls_cert_file, tls_key_file;
  int port = 0, train_port = 0, scan_interval_ms = 0, max_batch = 0, max_delay_us = 0, http_threads = 0;
  int max_misses = 3, max_attempts = 5, trainer_timeout_ms = 0, max_examples = 0, max_queued = 0;
  bool public_reads = false;
  std::size_t max_body = 64u << 20;
  bool healthcheck = false;
  std::string fetch_url;

  CLI::App app{"ml_controller: the mlswarm controller. Finds trainers by scanning SUBNET_TRAIN,\n"
               "dispatches training jobs to them, keeps a journal of every job under HOME_DIR/controller,\n"
               "and serves /predict and /classify from HOME_DIR/models.\n"
               "Settings come from the environment; a flag overrides its variable."};
  try {
    host = env_or("CONTROLLER_HOST", "0.0.0.0");
    port = env_int_or("CONTROLLER_PORT", 48515);
    train_port = env_int_or("TRAIN_PORT", 48516);
    subnet_text = env_or("SUBNET_TRAIN", "");
    dns_name = env_or("TRAIN_DNS", "");
    home_dir = env_or("HOME_DIR", "./var");
    data_dir = env_or("DATA_DIR", "/usr/share/datasets");
    scan_interval_ms = env_int_or("SCAN_INTERVAL_MS", 2000);
    max_batch = env_int_or("PREDICT_MAX_BATCH", 32);
    max_delay_us = env_int_or("PREDICT_MAX_DELAY_US", 0);
    http_threads = env_int_or("HTTP_THREADS", 32);
    log_level = env_or("LOG_LEVEL", "info");
    log_format = env_or("LOG_FORMAT", "text");
    api_token_file = env_or("API_TOKEN_FILE", "");
    cluster_token_file = env_or("CLUSTER_TOKEN_FILE", "");
    public_reads = env_int_or("PUBLIC_READS", 0) != 0;
    tls_cert_file = env_or("TLS_CERT_FILE", "");
    tls_key_file = env_or("TLS_KEY_FILE", "");
    trainer_timeout_ms = env_int_or("TRAINER_TIMEOUT_MS", 3000);
    max_examples = env_int_or("PREDICT_MAX_EXAMPLES", 1024);
    max_queued = env_int_or("MAX_QUEUED_JOBS", 1000);
  } catch (const Error& e) {
    std::fprintf(stderr, "ml_controller: %s\n", e.what());
    return 2;
  }
  app.add_option("--host", host, "listen address (CONTROLLER_HOST)")->capture_default_str();
  app.add_option("--port", port, "listen port (CONTROLLER_PORT)")->check(CLI::Range(1, 65535))->capture_default_str();
  app.add_option("--train-port", train_port, "the port every trainer listens on (TRAIN_PORT)")
      ->check(CLI::Range(1, 65535))->capture_default_str();
  app.add_option("--subnet", subnet_text,
                 "where trainers live: CIDR 10.42.0.0/24 or the prefix form 10.42.0 (SUBNET_TRAIN); "
                 "required unless --train-dns is given");
  app.add_option("--train-dns", dns_name,
                 "a name whose A records are trainers, e.g. tasks.ml_train on Swarm; resolved every pass "
                 "in addition to the subnet scan (TRAIN_DNS)");
  app.add_option("--home-dir", home_dir, "the shared mount: models/, jobs/, controller/ (HOME_DIR)")->capture_default_str();
  app.add_option("--data-dir", data_dir, "where datasets are looked up for /datasets (DATA_DIR)")->capture_default_str();
  app.add_option("--scan-interval-ms", scan_interval_ms, "time between discovery passes (SCAN_INTERVAL_MS)")
      ->check(CLI::Range(100, 600000))->capture_default_str();
  app.add_option("--max-misses", max_misses, "scan passes a trainer may miss before it is dropped")
      ->check(CLI::Range(1, 100))->capture_default_str();
  app.add_option("--max-attempts", max_attempts, "dispatches of one job before it fails")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--predict-max-batch", max_batch, "examples batched into one forward pass (PREDICT_MAX_BATCH)")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--predict-max-delay-us", max_delay_us,
                 "how long the first prediction of a batch waits for others; 0 = batch what queued during the previous pass (PREDICT_MAX_DELAY_US)")
      ->check(CLI::Range(0, 1000000))->capture_default_str();
  app.add_option("--http-threads", http_threads, "HTTP worker threads (HTTP_THREADS)")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--max-body", max_body, "largest request body accepted, in bytes")->capture_default_str();
  add_logging_flags(app, log_level, log_format);
  app.add_option("--api-token-file", api_token_file,
                 "file holding the bearer token clients must send, e.g. /run/secrets/mlswarm_api_token; "
                 "unset = open (API_TOKEN_FILE)");
  app.add_flag("--public-reads", public_reads,
               "with a token, leave GET /status, /jobs, /models, /datasets and /metrics open (PUBLIC_READS=1)");
  app.add_option("--cluster-token-file", cluster_token_file,
                 "file holding the token sent to trainers, which they require (CLUSTER_TOKEN_FILE)");
  app.add_option("--tls-cert-file", tls_cert_file, "PEM certificate: serve HTTPS instead of HTTP (TLS_CERT_FILE)");
  app.add_option("--tls-key-file", tls_key_file, "PEM private key for --tls-cert-file (TLS_KEY_FILE)");
  app.add_option("--trainer-timeout-ms", trainer_timeout_ms,
                 "read deadline of each call to a trainer (dispatch, status, cancel); connect deadline is "
                 "a tenth of it, at least 200 ms (TRAINER_TIMEOUT_MS)")
      ->check(CLI::Range(100, 600000))->capture_default_str();
  app.add_option("--predict-max-examples", max_examples, "examples allowed in one /predict (PREDICT_MAX_EXAMPLES)")
      ->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--max-queued-jobs", max_queued, "queued jobs before /train answers 429 (MAX_QUEUED_JOBS)")
      ->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_flag("--healthcheck", healthcheck,
               "probe GET /healthz of the controller on this port at 127.0.0.1 and exit 0 if healthy");
  app.add_option("--fetch", fetch_url,
                 "GET http://HOST:PORT/PATH, print the body and exit (curl for images that have none: "
                 "docker exec ... --fetch http://10.42.0.5:48516/status)");
  CLI11_PARSE(app, argc, argv);

  std::string api_token, cluster_token;
  try {
    if (!api_token_file.empty()) api_token = read_token_file(api_token_file, "API_TOKEN_FILE");
    if (!cluster_token_file.empty()) cluster_token = read_token_file(cluster_token_file, "CLUSTER_TOKEN_FILE");
  } catch (const Error& e) {
    std::fprintf(stderr, "ml_controller: %s\n", e.what());
    return 2;
  }
  if (!fetch_url.empty()) return fetch_and_print(fetch_url, api_token);

  if (healthcheck) {
    return http_probe("127.0.0.1", port, "/healthz", std::chrono::milliseconds(2000), !tls_cert_file.empty()) == 200
               ? 0
               : 1;
  }
  std::optional<Subnet> subnet;
  try {
    if (!subnet_text.empty() || dns_name.empty()) subnet = parse_subnet(subnet_text);
  } catch (const Error& e) {
    std::fprintf(stderr, "ml_controller: %s\n", e.what());
    return 2;
  }

  catch_stop_signals();
  init_logging(log_level, log_format, "ml_controller");
  try {
    JobRegistry registry(std::filesystem::path(home_dir) / "controller");
    ClusterOptions cluster_options;
    cluster_options.subnet = subnet;
    cluster_options.dns_name = dns_name;
    cluster_options.scan.port = train_port;
    cluster_options.scan_interval = std::chrono::milliseconds(scan_interval_ms);
    cluster_options.max_misses = max_misses;
    cluster_options.max_attempts = max_attempts;
    cluster_options.max_queued = static_cast<std::size_t>(max_queued);
    cluster_options.calls.read_timeout = std::chrono::milliseconds(trainer_timeout_ms);
    cluster_options.calls.connect_timeout = std::chrono::milliseconds(std::max(200, trainer_timeout_ms / 10));
    cluster_options.calls.cluster_token = cluster_token;
    Cluster cluster(registry, cluster_options);
    ModelServer models(home_dir, BatchingOptions{max_batch, std::chrono::microseconds(max_delay_us), 0});
    DatasetCache datasets(data_dir, home_dir);
    ControllerApi api(cluster, registry, models, datasets,
                      ControllerApiOptions{home_dir, static_cast<std::size_t>(max_examples), api_token, public_reads});

    HttpServerOptions http_options;
    http_options.max_body_bytes = max_body;
    http_options.threads = http_threads;
    http_options.tls_cert_file = tls_cert_file;
    http_options.tls_key_file = tls_key_file;
    HttpServer server([&api](const HttpRequest& request) { return api.handle(request); }, http_options);
    server.bind(host, port);
    cluster.start();
    spdlog::info("ml_controller listening on {}://{}:{}; trainers in {}{} on port {}; HOME_DIR {}; API {}{}; "
                 "cluster token {}",
                 tls_cert_file.empty() ? "http" : "https", host, port, subnet ? subnet->to_string() : "-",
                 dns_name.empty() ? "" : " and at " + dns_name, train_port, home_dir,
                 api_token.empty() ? "open" : "needs a bearer token",
                 !api_token.empty() && public_reads ? " (reads public)" : "", cluster_token.empty() ? "off" : "on");
    serve_until_stop_signal(server);
    cluster.stop();
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  spdlog::info("ml_controller stopped");
  return 0;
}
