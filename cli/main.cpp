// mlswarm: the command-line client of an mlswarm controller.

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "load.h"
#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/http_server.h"

namespace {

using nlohmann::json;

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// A /predict body of one test example of `dataset`, fetched from the controller.
std::string example_body(const std::string& url, const std::string& token, const std::string& model,
                         const std::string& dataset) {
  httplib::Client client(url);
  client.enable_server_certificate_verification(false);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  auto res = client.Get(("/datasets/" + dataset + "/examples?split=test&count=1").c_str(), headers);
  if (!res || res->status != 200) {
    throw std::runtime_error("cannot fetch an example from " + url + ": " +
                             (res ? std::to_string(res->status) + " " + res->body : httplib::to_string(res.error())));
  }
  return json{{"model_id", model}, {"examples", json::parse(res->body)["examples"]}}.dump();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mlswarm;
  CLI::App app{"mlswarm: talk to an mlswarm controller", "mlswarm"};
  app.require_subcommand(1);
  std::string url = "http://localhost:48515", token_file;
  app.add_option("--url", url, "the controller (MLSWARM_URL)")->envname("MLSWARM_URL")->capture_default_str();
  app.add_option("--token-file", token_file, "file holding the API token (MLSWARM_TOKEN_FILE)")
      ->envname("MLSWARM_TOKEN_FILE");

  cli_tool::LoadOptions load;
  std::string body_file, model, dataset = "fashion-mnist";
  double seconds = 10, warmup = 2;
  CLI::App* load_cmd = app.add_subcommand("load", "closed-loop /predict load: requests/s, p50/p99, failures");
  load_cmd->add_option("--model", model, "model to predict with (the body is one test example of --dataset)");
  load_cmd->add_option("--dataset", dataset)->capture_default_str();
  load_cmd->add_option("--body-file", body_file, "POST this body instead");
  load_cmd->add_option("--path", load.path)->capture_default_str();
  load_cmd->add_option("--clients", load.clients)->capture_default_str()->check(CLI::Range(1, 4096));
  load_cmd->add_option("--seconds", seconds)->capture_default_str();
  load_cmd->add_option("--warmup", warmup)->capture_default_str();
  load_cmd->add_option("--label", load.label)->capture_default_str();
  // The images' HEALTHCHECK: a 1 MB binary that starts in milliseconds, where the daemons
  // themselves take a second of CPU to load LibTorch (too slow on a node busy serving).
  std::string daemon = "controller";
  int probe_port = 0;
  bool probe_tls = false;
  CLI::App* health_cmd = app.add_subcommand(
      "healthcheck", "exit 0 when the daemon in this container answers /healthz (its port and TLS from its environment)");
  health_cmd->add_option("--daemon", daemon, "controller (CONTROLLER_PORT, TLS_CERT_FILE) or trainer (TRAIN_PORT)")
      ->check(CLI::IsMember({"controller", "trainer"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (*health_cmd) {
    const bool controller = daemon == "controller";
    const char* port_text = std::getenv(controller ? "CONTROLLER_PORT" : "TRAIN_PORT");
    probe_port = port_text != nullptr && *port_text != '\0' ? std::atoi(port_text) : (controller ? 48515 : 48516);
    const char* cert = std::getenv("TLS_CERT_FILE");
    probe_tls = controller && cert != nullptr && *cert != '\0';
    return http_probe("127.0.0.1", probe_port, "/healthz", std::chrono::milliseconds(2000), probe_tls) == 200 ? 0 : 1;
  }

  try {
    const std::string token = token_file.empty() ? std::string() : read_token_file(token_file, "MLSWARM_TOKEN_FILE");
    if (*load_cmd) {
      load.url = url;
      load.token = token;
      load.seconds = std::chrono::duration<double>(seconds);
      load.warmup = std::chrono::duration<double>(warmup);
      if (!body_file.empty()) {
        load.body = read_all(body_file);
      } else if (!model.empty()) {
        load.body = example_body(url, token, model, dataset);
      } else {
        std::cerr << "mlswarm load: give --model or --body-file\n";
        return 2;
      }
      return cli_tool::run_load(load);
    }
  } catch (const std::exception& e) {
    std::cerr << "mlswarm: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
