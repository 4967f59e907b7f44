// mlswarm: the command-line client of an mlswarm controller.

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <sys/ioctl.h>
#include <unistd.h>

#include "commands.h"
#include "load.h"
#include "dataset_commands.h"
#include "deploy_commands.h"
#include "sweep_commands.h"
#include "mlswarm/auth.h"
#include "mlswarm/http_client.h"
#include "mlswarm/http_server.h"
#include "mlswarm/ports.h"

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

/// The images' HEALTHCHECK: a 1 MB binary that starts in milliseconds, where the daemons
/// themselves take a second of CPU to load LibTorch (too slow on a node busy serving).
int healthcheck(const std::string& daemon) {
  const bool controller = daemon == "controller";
  const char* port_text = std::getenv(controller ? "CONTROLLER_PORT" : "TRAIN_PORT");
  const int port = port_text != nullptr && *port_text != '\0'
                       ? std::atoi(port_text)
                       : (controller ? mlswarm::kDefaultControllerPort : mlswarm::kDefaultTrainPort);
  const char* cert = std::getenv("TLS_CERT_FILE");
  const bool tls = controller && cert != nullptr && *cert != '\0';
  return mlswarm::healthz_exit_code(port, tls);
}

struct Commands {
  CLI::App* status = nullptr;
  CLI::App* jobs = nullptr;
  CLI::App* models = nullptr;
  CLI::App* cancel = nullptr;
  CLI::App* predict = nullptr;
  CLI::App* train = nullptr;
  CLI::App* load = nullptr;
  CLI::App* health = nullptr;
  CLI::App* sweep = nullptr;
  CLI::App* sweep_create = nullptr;
  CLI::App* sweep_show = nullptr;
  CLI::App* sweep_cancel = nullptr;
  CLI::App* sweeps = nullptr;
  CLI::App* deploy = nullptr;
  CLI::App* rollout = nullptr;
  CLI::App* deployments = nullptr;
  CLI::App* datasets = nullptr;
  CLI::App* dataset_add = nullptr;
  mlswarm::cli_tool::DatasetAddOptions dataset_add_options;
  double test_fraction = -1;
  std::string deployment, deploy_model, rollout_options;
  bool rollout_follow = false, rollout_abort = false;
  std::string sweep_id, sweep_file;
  bool sweep_follow = false;
  std::string job_state, job_id, follow_id, model, dataset = "fashion-mnist", body_file, daemon = "controller";
  std::vector<std::string> images, load_headers;
  int top = 3;
  double seconds = 10, warmup = 2;
  mlswarm::cli_tool::TrainOptions train_options;
  mlswarm::cli_tool::LoadOptions load_options;
};

void add_train(CLI::App& app, Commands& c) {
  mlswarm::cli_tool::TrainOptions& t = c.train_options;
  c.train = app.add_subcommand("train", "start a training job (POST /train); --follow shows its progress to the end");
  c.train
      ->add_option(
          "--dataset", t.dataset,
          "fashion-mnist, mnist, cifar10 (what the trainers' DATA_DIR has) or a registered folder (mlswarm datasets)")
      ->capture_default_str();
  c.train->add_option("--epochs", t.epochs)->capture_default_str()->check(CLI::Range(1, 100000));
  c.train->add_option("--trainers", t.trainers, "train one model on this many trainers at once (data parallel)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  c.train->add_option("--min-trainers", t.min_trainers, "after a lost trainer, resume on at least this many");
  c.train->add_option("--model-id", t.model_id, "the model's id (default: <dataset>-<date>-<time>)");
  c.train->add_option("--model-type", t.model_type, "convnet, resnet or mlp")->capture_default_str();
  c.train->add_option("--examples", t.examples, "train on the first N training images (default: all)");
  c.train->add_option("--test-examples", t.test_examples,
                      "evaluate each epoch on the first N test images (default: all)");
  c.train->add_option("--batch-size", t.batch_size, "the global batch (default: the controller's, 128)");
  c.train->add_option("--lr", t.lr, "learning rate");
  c.train->add_option("--patience", t.patience, "stop after this many epochs without a better test accuracy");
  c.train->add_option("--publish", t.publish, "serve the last epoch's weights or the best one's by default")
      ->check(CLI::IsMember({"last", "best"}));
  c.train->add_flag("--follow,-f", t.follow, "show the progress; exit 0 with the final accuracy, 1 with the error");
}

void add_reads(CLI::App& app, Commands& c) {
  c.status = app.add_subcommand("status", "the trainers and the jobs, as tables");
  c.jobs = app.add_subcommand("jobs", "the jobs; --follow ID shows one job's progress to the end");
  c.jobs->add_option("--state", c.job_state, "only jobs in this state")
      ->check(CLI::IsMember({"queued", "running", "succeeded", "failed", "cancelled"}));
  c.jobs->add_option("--follow,-f", c.follow_id, "follow this job until it ends");
  c.models = app.add_subcommand("models", "the trained models: version, accuracy");
  c.cancel = app.add_subcommand("cancel", "cancel a queued or running job");
  c.cancel->add_option("job_id", c.job_id, "the job")->required();
  c.predict = app.add_subcommand("predict", "classify image files (PNG, JPEG, BMP, GIF) with a model (POST /classify)");
  c.predict->add_option("--model,-m", c.model, "the model (default: the most recently trained)");
  c.predict->add_option("--top", c.top, "show this many classes with their probabilities")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  c.predict->add_option("images", c.images, "image files")->required()->check(CLI::ExistingFile);
}

void add_sweeps(CLI::App& app, Commands& c) {
  c.sweep = app.add_subcommand("sweep", "hyper-parameter sweeps (random search or ASHA): create, show, cancel");
  c.sweep->require_subcommand(1);
  c.sweep_create = c.sweep->add_subcommand("create", "start a sweep from a JSON spec (POST /sweeps)");
  c.sweep_create->add_option("spec", c.sweep_file, "the sweep's JSON spec, a file or - for standard input")->required();
  c.sweep_create->add_flag("--follow,-f", c.sweep_follow,
                           "show a live leaderboard line; exit 0 with the best trial, 1 when it fails");
  c.sweep_show = c.sweep->add_subcommand("show", "a sweep's trials as a leaderboard");
  c.sweep_show->add_option("sweep_id", c.sweep_id, "the sweep")->required();
  c.sweep_show->add_flag("--follow,-f", c.sweep_follow, "follow it to its end");
  c.sweep_cancel = c.sweep->add_subcommand("cancel", "cancel a sweep and its running trials");
  c.sweep_cancel->add_option("sweep_id", c.sweep_id, "the sweep")->required();
  c.sweeps = app.add_subcommand("sweeps", "the sweeps: state, best trial, trainer-seconds");
}

void add_datasets(CLI::App& app, Commands& c) {
  mlswarm::cli_tool::DatasetAddOptions& o = c.dataset_add_options;
  c.datasets = app.add_subcommand("datasets", "the datasets to train on: built-in and registered folders");
  CLI::App* dataset = app.add_subcommand("dataset", "a folder of your own images as a dataset")->require_subcommand(1);
  c.dataset_add = dataset->add_subcommand(
      "add", "copy DIR (train/<class>/*.png|jpg, optionally test/<class>/) to HOME_DIR/datasets/NAME and register it");
  c.dataset_add->add_option("name", o.name, "the dataset's name")->required();
  c.dataset_add->add_option("dir", o.dir, "the folder (with --home-dir: a local one; without: a path under HOME_DIR)")
      ->required();
  c.dataset_add->add_option("--home-dir", o.home_dir, "the controller's HOME_DIR as this machine sees it (HOME_DIR)")
      ->envname("HOME_DIR");
  c.dataset_add->add_option("--image-size", o.image_size, "HxW every image is resized to (default: their median)");
  c.dataset_add->add_option("--channels", o.channels, "1 (grey) or 3 (colour); default: 1 when every image is grey")
      ->check(CLI::IsMember({1, 3}));
  c.dataset_add->add_option("--test-fraction", c.test_fraction, "without test/: the share of each class tested on")
      ->check(CLI::Range(0.0, 0.9));
}

void add_deployments(CLI::App& app, Commands& c) {
  c.deploy = app.add_subcommand("deploy", "make a served name serve a model version (PUT /deployments/NAME)");
  c.deploy->add_option("name", c.deployment, "the served name")->required();
  c.deploy->add_option("model", c.deploy_model, "MODEL or MODEL:VERSION (default: its latest)")->required();
  c.rollout = app.add_subcommand(
      "rollout", "roll a model version out onto a served name: evaluation, shadow, canary steps, promotion");
  c.rollout->add_option("name", c.deployment, "the served name")->required();
  c.rollout->add_option("model", c.deploy_model, "MODEL or MODEL:VERSION (not with --abort)");
  c.rollout->add_option("--options", c.rollout_options,
                        "rollout fields as JSON, e.g. '{\"steps\": [10, 50, 100], \"step_seconds\": 60}'");
  c.rollout->add_flag("--follow,-f", c.rollout_follow,
                      "one live line per change; exit 0 promoted, 1 rolled back (with the reason)");
  c.rollout->add_flag("--abort", c.rollout_abort, "abort the rollout under way: the stable serves everything again");
  c.deployments = app.add_subcommand("deployments", "the served names: what each serves, its rollout");
}

void add_tools(CLI::App& app, Commands& c) {
  mlswarm::cli_tool::LoadOptions& load = c.load_options;
  c.load = app.add_subcommand("load", "closed-loop /predict load: requests/s, p50/p99, failures");
  c.load->add_option("--model", c.model, "model to predict with (the body is one test example of --dataset)");
  c.load->add_option("--dataset", c.dataset)->capture_default_str();
  c.load->add_option("--body-file", c.body_file, "POST this body instead");
  c.load->add_option("--path", load.path)->capture_default_str();
  c.load->add_option("--clients", load.clients)->capture_default_str()->check(CLI::Range(1, 4096));
  c.load->add_option("--threads", load.threads, "event loops the clients share")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  c.load->add_option("--seconds", c.seconds)->capture_default_str();
  c.load->add_option("--warmup", c.warmup)->capture_default_str();
  c.load->add_option("--label", load.label)->capture_default_str();
  c.load->add_flag("--per-second", load.per_second, "also print each second's requests and p99 (\"per_second\")");
  c.load->add_option("--key-header", load.key_header,
                     "send this header with a value per client (X-Request-Key: a canary's sticky split)");
  c.load->add_option("--expect-status", load.expect_status, "the status every answer must have (404: time refusals)")
      ->capture_default_str()
      ->check(CLI::Range(100, 599));
  c.load->add_option("--content-type", load.content_type)->capture_default_str();
  c.load->add_option("--header", c.load_headers, "an extra header, \"Name: value\" (repeatable)");
  c.health = app.add_subcommand(
      "healthcheck",
      "exit 0 when the daemon in this container answers /healthz (its port and TLS from its environment)");
  c.health->add_option("--daemon", c.daemon, "controller (CONTROLLER_PORT, TLS_CERT_FILE) or trainer (TRAIN_PORT)")
      ->check(CLI::IsMember({"controller", "trainer"}))
      ->capture_default_str();
}

int run_load(Commands& c, const std::string& url, const std::string& token) {
  mlswarm::cli_tool::LoadOptions& load = c.load_options;
  load.url = url;
  load.token = token;
  load.seconds = std::chrono::duration<double>(c.seconds);
  load.warmup = std::chrono::duration<double>(c.warmup);
  for (const auto& h : c.load_headers) {
    const auto colon = h.find(':');
    if (colon == std::string::npos) {
      std::cerr << "mlswarm load: --header takes \"Name: value\"\n";
      return 2;
    }
    std::string value = h.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    load.headers.emplace_back(h.substr(0, colon), value);
  }
  if (!c.body_file.empty()) {
    load.body = read_all(c.body_file);
  } else if (!c.model.empty()) {
    load.body = example_body(url, token, c.model, c.dataset);
  } else {
    std::cerr << "mlswarm load: give --model or --body-file\n";
    return 2;
  }
  return mlswarm::cli_tool::run_load(load);
}

int dispatch(Commands& c, const mlswarm::cli_tool::Client& client, const mlswarm::cli_tool::Output& out,
             const std::string& token) {
  using namespace mlswarm::cli_tool;
  if (*c.status) return cmd_status(client, out);
  if (*c.jobs) {
    if (!c.follow_id.empty()) return follow_job(client, out, c.follow_id, c.train_options.poll);
    return cmd_jobs(client, out, c.job_state);
  }
  if (*c.models) return cmd_models(client, out);
  if (*c.cancel) return cmd_cancel(client, out, c.job_id);
  if (*c.predict) return cmd_predict(client, out, c.model, c.images, c.top);
  if (*c.train) return cmd_train(client, out, c.train_options);
  if (*c.load) return run_load(c, client.url(), token);
  if (*c.sweeps) return cmd_sweeps(client, out);
  if (*c.sweep_create) return cmd_sweep_create(client, out, c.sweep_file, c.sweep_follow, c.train_options.poll);
  if (*c.sweep_show) return cmd_sweep_show(client, out, c.sweep_id, c.sweep_follow, c.train_options.poll);
  if (*c.sweep_cancel) return cmd_sweep_cancel(client, out, c.sweep_id);
  if (*c.deployments) return cmd_deployments(client, out);
  if (*c.datasets) return cmd_datasets(client, out);
  if (*c.dataset_add) {
    if (c.test_fraction >= 0) c.dataset_add_options.test_fraction = c.test_fraction;
    return cmd_dataset_add(client, out, c.dataset_add_options);
  }
  if (*c.deploy) return cmd_deploy(client, out, c.deployment, c.deploy_model);
  if (*c.rollout) {
    if (c.rollout_abort) return cmd_rollout_abort(client, out, c.deployment);
    if (c.deploy_model.empty()) {
      if (c.rollout_follow) return follow_rollout(client, out, c.deployment, c.train_options.poll);
      throw CliError("give the MODEL[:VERSION] to roll out (or --follow, or --abort)", 2);
    }
    json options = c.rollout_options.empty() ? json::object() : json::parse(c.rollout_options, nullptr, false);
    if (!options.is_object()) throw CliError("--options must be a JSON object", 2);
    return cmd_rollout(client, out, c.deployment, c.deploy_model, options, c.rollout_follow, c.train_options.poll);
  }
  return 2;
}

mlswarm::cli_tool::Output output_mode(bool json) {
  mlswarm::cli_tool::Output out;
  out.json = json;
  out.terminal = ::isatty(STDOUT_FILENO) != 0;
  winsize size{};
  if (out.terminal && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) out.width = size.ws_col;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlswarm: the command line of an mlswarm controller (MLSWARM_URL, MLSWARM_TOKEN_FILE)", "mlswarm"};
  app.require_subcommand(1);
  app.fallthrough();  // --json, --url and --token-file also after the subcommand
  std::string url = "http://localhost:" + std::to_string(mlswarm::kDefaultControllerPort), token_file;
  bool json = false;
  app.add_option("--url", url, "the controller (MLSWARM_URL)")->envname("MLSWARM_URL")->capture_default_str();
  app.add_option("--token-file", token_file, "file holding the API token (MLSWARM_TOKEN_FILE)")
      ->envname("MLSWARM_TOKEN_FILE");
  app.add_flag("--json", json, "print the controller's replies as raw JSON, one per line, for scripts");
  app.footer("Exit codes: 0 ok, 1 the job or request failed, 2 usage, 3 controller unreachable, 4 token refused.");
  Commands c;
  add_reads(app, c);
  add_train(app, c);
  add_tools(app, c);
  add_sweeps(app, c);
  add_deployments(app, c);
  add_datasets(app, c);
  CLI11_PARSE(app, argc, argv);
  if (*c.health) return healthcheck(c.daemon);
  try {
    const std::string token =
        token_file.empty() ? std::string() : mlswarm::read_token_file(token_file, "MLSWARM_TOKEN_FILE");
    return dispatch(c, mlswarm::cli_tool::Client(url, token), output_mode(json), token);
  } catch (const mlswarm::cli_tool::CliError& e) {
    std::cerr << "mlswarm: " << e.what() << "\n";
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << "mlswarm: " << e.what() << "\n";
    return 1;
  }
}
