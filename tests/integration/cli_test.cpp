// The mlswarm command line against a real controller and trainer: every subcommand, on a
// pipe (as scripts see it), with the API token from MLSWARM_TOKEN_FILE.

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include <sys/wait.h>

#include <cstdio>
#include <regex>
#include <sstream>

#include "cluster_fixture.h"

namespace mlswarm {
namespace {

struct CliRun {
  int code = -1;
  std::string out;  ///< stdout
  std::string err;  ///< stderr
};

std::string quoted(const std::string& arg) {
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class CliTest : public ClusterTest {
 protected:
  /// Runs mlswarm with MLSWARM_URL and MLSWARM_TOKEN_FILE set, stdout a pipe.
  CliRun cli(const std::vector<std::string>& args, bool with_token = true) {
    std::string command = "MLSWARM_URL=http://127.0.0.1:" + std::to_string(controller_port_) +
                          " MLSWARM_TOKEN_FILE=" + (with_token ? quoted(token_file_.string()) : std::string("")) + " " +
                          quoted(MLSWARM_CLI_BIN);
    for (const auto& a : args) command += " " + quoted(a);
    const auto err_file = home_ / "cli-stderr.txt";
    command += " 2>" + quoted(err_file.string());
    CliRun run;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return run;
    char buffer[4096];
    std::size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) run.out.append(buffer, n);
    const int status = ::pclose(pipe);
    run.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.err = slurp(err_file);
    return run;
  }

  void start_with_token() {
    token_file_ = write_secret(home_, "api_token", "cli-test-token-0123456789");
    start_trainer(2);
    start_controller({"--api-token-file", token_file_.string()});
    client_->set_bearer_token_auth("cli-test-token-0123456789");
    ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 20s));
  }

  std::filesystem::path token_file_;
};

std::filesystem::path write_png(const std::filesystem::path& path) {
  std::vector<unsigned char> pixels(28 * 28, 0);
  for (int y = 3; y <= 25; ++y) {
    for (int x = 0; x < 28; ++x) {
      if ((x >= 8 && x <= 12) || (x >= 15 && x <= 19) || (y <= 8 && x >= 8 && x <= 19)) pixels[y * 28 + x] = 220;
    }
  }
  stbi_write_png(path.c_str(), 28, 28, 1, pixels.data(), 28);
  return path;
}

/// `status` without the token is refused, naming MLSWARM_TOKEN_FILE.
void expect_refused_without_token(const CliRun& refused) {
  EXPECT_EQ(refused.code, 4) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("MLSWARM_TOKEN_FILE"), std::string::npos) << refused.err;
}

/// `status` lists the one trainer, ready.
void expect_status_lists_the_trainer(const CliRun& status) {
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_NE(status.out.find("TRAINERS (1)"), std::string::npos) << status.out;
  EXPECT_TRUE(std::regex_search(status.out, std::regex("127\\.0\\.0\\.2:\\d+ +ready"))) << status.out;
}

/// `train --follow` on a pipe: plain lines, one per change, both epochs, the rate and the outcome.
void expect_followed_training(const CliRun& train) {
  ASSERT_EQ(train.code, 0) << train.out << train.err;
  EXPECT_EQ(train.out.find('\r'), std::string::npos) << "a pipe gets no carriage returns";
  EXPECT_NE(train.out.find("epoch 1/2"), std::string::npos) << train.out;
  EXPECT_NE(train.out.find("epoch 2/2"), std::string::npos) << train.out;
  EXPECT_TRUE(std::regex_search(train.out, std::regex("images/s ETA"))) << train.out;
  EXPECT_TRUE(std::regex_search(
      train.out, std::regex("succeeded: model cli-model, version 2, test accuracy 0\\.\\d{4} after 2 epochs")))
      << train.out;
}

void expect_one_line_per_change(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream split(out);
  for (std::string line; std::getline(split, line);) lines.push_back(line);
  for (std::size_t i = 1; i < lines.size(); ++i) EXPECT_NE(lines[i], lines[i - 1]) << "one line per change";
}

/// `models` lists cli-model at version 2.
void expect_models_list_it(const CliRun& models) {
  ASSERT_EQ(models.code, 0) << models.err;
  EXPECT_TRUE(std::regex_search(models.out, std::regex("cli-model +convnet +fashion-mnist +2 +0\\.\\d{4}")))
      << models.out;
}

/// `jobs --json` holds the one job, succeeded.
void expect_jobs_json_holds_the_job(const CliRun& jobs) {
  ASSERT_EQ(jobs.code, 0) << jobs.err;
  json listed = json::parse(jobs.out);
  ASSERT_EQ(listed["jobs"].size(), 1u) << jobs.out;
  EXPECT_EQ(listed["jobs"][0]["state"], "succeeded");
}

/// `predict` names the class of the image with the model and its version.
void expect_predicted(const CliRun& predict) {
  ASSERT_EQ(predict.code, 0) << predict.err;
  EXPECT_TRUE(std::regex_search(predict.out,
                                std::regex("trouser\\.png: [A-Za-z/ -]+ \\(\\d+\\.\\d%\\) model cli-model version 2")))
      << predict.out;
}

/// A command the API refuses ends with code 1 and says why on stderr.
void expect_api_error(const CliRun& run, const std::string& error) {
  EXPECT_EQ(run.code, 1);
  EXPECT_NE(run.err.find(error), std::string::npos) << run.err;
}

TEST_F(CliTest, EverySubcommandAgainstALocalCluster) {
  start_with_token();

  expect_refused_without_token(cli({"status"}, false));
  ASSERT_NO_FATAL_FAILURE(expect_status_lists_the_trainer(cli({"status"})));

  CliRun train = cli({"train", "--examples", "1500", "--test-examples", "2000", "--epochs", "2", "--model-id",
                      "cli-model", "--follow"});
  ASSERT_NO_FATAL_FAILURE(expect_followed_training(train));
  EXPECT_EQ(get("/models/cli-model")["spec"]["test_idxs"], json::parse("[0, 2000]")) << "--test-examples";
  expect_one_line_per_change(train.out);

  ASSERT_NO_FATAL_FAILURE(expect_models_list_it(cli({"models"})));
  ASSERT_NO_FATAL_FAILURE(expect_jobs_json_holds_the_job(cli({"jobs", "--json"})));
  CliRun table = cli({"jobs", "--state", "succeeded"});
  EXPECT_TRUE(std::regex_search(table.out, std::regex("job-\\w+ +cli-model +succeeded +2/2 +100%"))) << table.out;

  const auto png = write_png(home_ / "trouser.png");
  ASSERT_NO_FATAL_FAILURE(expect_predicted(cli({"predict", "--model", "cli-model", "--top", "2", png.string()})));
  expect_api_error(cli({"predict", "--model", "no-such-model", png.string()}), "404 not_found: unknown model");

  // A long job, cancelled: `cancel` says so, and following it ends non-zero with its state.
  CliRun started = cli({"train", "--epochs", "20", "--model-id", "cli-long", "--json"});
  ASSERT_EQ(started.code, 0) << started.err;
  const std::string id = json::parse(started.out)["job_id"];
  ASSERT_TRUE(eventually([&] { return job_in(id, "running"); }, 30s));
  CliRun cancel = cli({"cancel", id});
  EXPECT_EQ(cancel.code, 0) << cancel.err;
  EXPECT_NE(cancel.out.find("job " + id), std::string::npos) << cancel.out;
  CliRun followed = cli({"jobs", "--follow", id});
  EXPECT_EQ(followed.code, 1) << followed.out << followed.err;
  EXPECT_NE(followed.out.find("cancelled: job " + id), std::string::npos) << followed.out;

  expect_api_error(cli({"train", "--model-id", "../escape", "--epochs", "1"}), "400 invalid_argument");
}

}  // namespace
}  // namespace mlswarm

namespace mlswarm {
namespace {

// `sweep create --follow` on a pipe: one leaderboard line per change, then the table and the
// best trial, exit 0; `sweeps` lists it; a bad spec is refused with the field that is wrong.
TEST_F(CliTest, SweepCreateFollowsToTheBestTrialAndSweepsListsIt) {
  start_with_token();
  json spec = {{"sweep_id", "cli-sweep"},
               {"trials", 3},
               {"seed", 4},
               {"base", {{"example_idxs", {0, 600}}, {"test_idxs", {0, 500}}}},
               {"space", {{"lr", {{"type", "log_uniform"}, {"min", 0.003}, {"max", 0.3}}}}},
               {"scheduler", {{"type", "random"}, {"epochs", 1}}}};
  const auto file = home_ / "sweep.json";
  std::ofstream(file) << spec.dump();
  CliRun run = cli({"sweep", "create", file.string(), "--follow"});
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  EXPECT_EQ(run.out.find('\r'), std::string::npos) << "a pipe gets no carriage returns";
  EXPECT_NE(run.out.find("sweep cli-sweep accepted: 3 trials"), std::string::npos) << run.out;
  EXPECT_TRUE(std::regex_search(run.out, std::regex("cli-sweep running: \\d/3 trials, \\d running"))) << run.out;
  EXPECT_TRUE(std::regex_search(run.out, std::regex("TRIAL +STATE +RUNG +EPOCHS +ACCURACY +PARAMS"))) << run.out;
  EXPECT_TRUE(std::regex_search(
      run.out,
      std::regex("best: trial \\d lr=[0-9.e-]+ accuracy 0\\.\\d{4} after 1 epochs; served as model cli-sweep")))
      << run.out;

  CliRun listed = cli({"sweeps"});
  ASSERT_EQ(listed.code, 0) << listed.err;
  EXPECT_TRUE(std::regex_search(listed.out, std::regex("cli-sweep +succeeded +random +3 +\\d +0\\.\\d{4}")))
      << listed.out;
  CliRun shown = cli({"sweep", "show", "cli-sweep"});
  ASSERT_EQ(shown.code, 0) << shown.err;
  EXPECT_NE(shown.out.find("cli-sweep succeeded: 3/3 trials"), std::string::npos) << shown.out;

  spec["sweep_id"] = "cli-bad";
  spec["space"]["lr"]["max"] = "high";
  std::ofstream(file) << spec.dump();
  expect_api_error(cli({"sweep", "create", file.string()}), "400 invalid_argument");
  expect_api_error(cli({"sweep", "cancel", "cli-sweep"}), "409");
}

// Issue 39: mlswarm deploy, rollout --follow (one line per change; exit 0 promoted, 1 rolled back
// with the reason) and deployments, on a pipe. Three small models: the stable, a candidate as
// good, one trained on 200 images.
TEST_F(CliTest, DeployRolloutAndDeploymentsFollowARolloutToItsEnd) {
  start_with_token();
  for (const auto& [model, examples] : {std::pair<std::string, int>{"cli-a", 2000}, {"cli-b", 2000}, {"cli-c", 200}}) {
    auto [status, body] = post("/train", json{{"model_id", model},
                                              {"example_idxs", {0, examples}},
                                              {"test_idxs", {0, 500}},
                                              {"train_opts", {{"epochs", 1}}}}
                                             .dump());
    ASSERT_EQ(status, 202) << body.dump();
    const std::string id = body["job_id"];
    ASSERT_TRUE(eventually([&] { return job_in(id, "succeeded"); }, 180s)) << job(id).dump();
  }
  CliRun deployed = cli({"deploy", "cli-name", "cli-a"});
  ASSERT_EQ(deployed.code, 0) << deployed.out << deployed.err;
  EXPECT_NE(deployed.out.find("cli-name serves cli-a v1"), std::string::npos) << deployed.out;
  const std::string fast = R"({"eval_idxs": [0, 500], "shadow_seconds": 1, "steps": [50, 100], "step_seconds": 1,
      "min_requests": 0, "gates": {"max_accuracy_drop": 0.1, "max_class_recall_drop": 1}})";
  CliRun promoted = cli({"rollout", "cli-name", "cli-b:1", "--options", fast, "--follow"});
  ASSERT_EQ(promoted.code, 0) << promoted.out << promoted.err;
  EXPECT_EQ(promoted.out.find('\r'), std::string::npos) << "a pipe gets no carriage returns";
  EXPECT_NE(promoted.out.find("cli-name: canary weight 50% (cli-b v1 over cli-a v1)"), std::string::npos)
      << promoted.out;
  EXPECT_NE(promoted.out.find("cli-name: promoted weight 100%"), std::string::npos) << promoted.out;
  CliRun refused = cli({"rollout", "cli-name", "cli-c", "--options", R"({"eval_idxs": [0, 500]})", "--follow"});
  EXPECT_EQ(refused.code, 1) << refused.out << refused.err;
  EXPECT_TRUE(std::regex_search(refused.out, std::regex("rolled_back .*evaluation on 500 held-out examples: ")))
      << refused.out;
  CliRun listed = cli({"deployments"});
  ASSERT_EQ(listed.code, 0) << listed.err;
  EXPECT_TRUE(std::regex_search(listed.out, std::regex("cli-name +cli-b v1 +cli-c v1 +rolled_back +-"))) << listed.out;
  expect_api_error(cli({"rollout", "cli-name", "--abort"}), "409");
  expect_api_error(cli({"rollout", "nope", "cli-b"}), "404");
}

// Issue 40: a local folder of images copied onto HOME_DIR and registered; one already under
// HOME_DIR registered where it is; both listed by `datasets`.
TEST_F(CliTest, DatasetAddCopiesAFolderRegistersItAndDatasetsListsIt) {
  start_with_token();
  TempDir photos;
  for (const std::string cls : {"bags", "shoes"}) {
    std::filesystem::create_directories(photos / "train" / cls);
    for (int i = 0; i < 4; ++i) write_png(photos / "train" / cls / (std::to_string(i) + ".png"));
  }
  std::ofstream(photos / "train" / "shoes" / "broken.jpg") << "not a jpeg";
  CliRun added = cli({"dataset", "add", "photos", photos.path().string(), "--home-dir", home_.path().string(),
                      "--image-size", "32x32"});
  ASSERT_EQ(added.code, 0) << added.out << added.err;
  EXPECT_NE(added.out.find("9 of 9 files copied"), std::string::npos) << added.out;
  EXPECT_TRUE(std::regex_search(added.out, std::regex("dataset photos registered: 2 classes, \\d+ train and \\d+ "
                                                      "test images, resized to \\[1,32,32\\]")))
      << added.out;
  EXPECT_NE(added.out.find("train/shoes/broken.jpg: "), std::string::npos) << "the skipped file named: " << added.out;
  CliRun in_place =
      cli({"dataset", "add", "again", (home_ / "datasets" / "photos").string(), "--home-dir", home_.path().string()});
  ASSERT_EQ(in_place.code, 0) << in_place.out << in_place.err;
  EXPECT_EQ(in_place.out.find("copied"), std::string::npos) << "already under HOME_DIR: " << in_place.out;
  CliRun listed = cli({"datasets"});
  ASSERT_EQ(listed.code, 0) << listed.err;
  EXPECT_TRUE(std::regex_search(listed.out, std::regex("photos +1x32x32 +2 +\\d+ +\\d+ +folder"))) << listed.out;
  EXPECT_TRUE(std::regex_search(listed.out, std::regex("again +1x28x28 +2"))) << listed.out;
  EXPECT_TRUE(std::regex_search(listed.out, std::regex("fashion-mnist +1x28x28 +10 +60000 +10000 +idx"))) << listed.out;
  expect_api_error(cli({"dataset", "add", "x", "../etc"}), "400");
}

}  // namespace
}  // namespace mlswarm
