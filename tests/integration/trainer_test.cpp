// The real ml_trainer binary on a loopback address, driven over HTTP as users drive it.

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "../support/http_json.h"
#include "../support/process.h"
#include "../support/raw_client.h"
#include "../support/temp_dir.h"
#include "../support/wait.h"
#include "mlswarm/dataset.h"
#include "mlswarm/torch/model_zoo.h"

namespace mlswarm {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;
using testing::eventually;
using testing::TempDir;

class TrainerProcess : public ::testing::Test {
 protected:
  void start(const std::string& data_dir = MLSWARM_DATA_DIR) {
    port_ = testing::free_port(kHost);
    trainer_ = std::make_unique<ChildProcess>(
        ML_TRAINER_BIN,
        std::vector<std::string>{"--host", kHost, "--port", std::to_string(port_), "--home-dir", home_.path().string(),
                                 "--data-dir", data_dir},
        home_ / "trainer.log");
    client_ = std::make_unique<httplib::Client>(kHost, port_);
    client_->set_read_timeout(30s);
    ASSERT_TRUE(eventually([&] { return client_->Get("/healthz") != nullptr; }, 20s))
        << "the trainer did not come up:\n"
        << trainer_->log();
  }
  void TearDown() override {
    if (HasFailure() && trainer_) std::cerr << "--- trainer log ---\n" << trainer_->log();
  }

  json get(const std::string& path) { return testing::get_json(*client_, path); }
  std::pair<int, json> post(const std::string& path, const std::string& body) {
    return testing::post_json(*client_, path, body);
  }
  /// Polls GET /status until the job is in `state`, or fails at the deadline.
  json wait_for_state(const std::string& job_id, const std::string& state, std::chrono::seconds timeout) {
    json last = json::object();
    bool reached = eventually(
        [&] {
          json status = get("/status");  // named: a temporary's ["jobs"] would dangle in the loop
          for (const auto& job : status["jobs"]) {
            if (job["job_id"] == job_id) last = job;
          }
          return last.value("state", "") == state;
        },
        timeout);
    EXPECT_TRUE(reached) << "job " << job_id << " never reached " << state << "; last: " << last.dump();
    return last;
  }

  static constexpr const char* kHost = "127.0.0.2";
  TempDir home_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> trainer_;
  std::unique_ptr<httplib::Client> client_;
};

// The trainer learns Fashion-MNIST from a few thousand images, and the model.pt it wrote
// loads back and scores what the trainer said it scored.
TEST_F(TrainerProcess, TrainsARealModelThatLoadsBack) {
  start();
  auto [status, job] = post("/train", R"({"model_id": "it-fmnist", "example_idxs": [0, 4000],
      "train_opts": {"epochs": 1, "batch_size": 64, "lr": 0.05, "seed": 1}})");
  ASSERT_EQ(status, 202) << job.dump();
  json done = wait_for_state(job["job_id"], "succeeded", 240s);
  double recorded = done["accuracy"].get<double>();
  EXPECT_GT(recorded, 0.6) << "chance is 0.1";

  ModelMeta meta;
  auto model = load_trained_model(home_.path(), "it-fmnist", &meta);
  Dataset data = load_dataset("fashion-mnist", MLSWARM_DATA_DIR, "");
  auto images = torch::from_blob(data.test.images.data(), {data.test.count, 1, 28, 28}, torch::kUInt8);
  auto labels = torch::from_blob(data.test.labels.data(), {data.test.count}, torch::kUInt8).to(torch::kInt64);
  torch::NoGradGuard no_grad;
  auto predicted = model->forward(normalize_images(images, meta.mean, meta.std)).argmax(1);
  double accuracy = predicted.eq(labels).sum().item<double>() / static_cast<double>(data.test.count);
  EXPECT_NEAR(accuracy, recorded, 1e-3) << "model.pt does not score what the trainer recorded";
  EXPECT_EQ(meta.class_names.at(9), "Ankle boot");
  EXPECT_EQ(meta.epochs.size(), 1u);
}

// A trainer killed between publishing a job's last epoch and the controller hearing of it:
// the next attempt finds a checkpoint with no epoch left. It takes the published model as its
// own (meta.json names it), instead of reporting "succeeded" with nothing written by it, which
// the controller would refuse again and again.
TEST_F(TrainerProcess, AnAttemptResumedAfterTheLastEpochTakesThePublishedModel) {
  start();
  auto [status, job] = post("/train", R"({"job_id": "done-1", "model_id": "it-done", "example_idxs": [0, 500],
      "attempt": 1, "train_opts": {"epochs": 1}})");
  ASSERT_EQ(status, 202) << job.dump();
  wait_for_state("done-1", "succeeded", 120s);
  const auto meta_of = [&] { return json::parse(std::ifstream(home_ / "models/it-done/meta.json")); };
  EXPECT_EQ(meta_of()["attempt"], 1);
  const auto weights = std::filesystem::last_write_time(home_ / "models/it-done/model.pt");
  std::tie(status, job) = post("/train", R"({"job_id": "done-1", "model_id": "it-done", "example_idxs": [0, 500],
      "attempt": 2, "train_opts": {"epochs": 1}})");
  ASSERT_EQ(status, 202) << job.dump();
  ASSERT_TRUE(eventually(
      [&] { return get("/jobs/done-1").value("attempts", 0) == 2 && get("/jobs/done-1")["state"] == "succeeded"; },
      60s))
      << get("/jobs/done-1").dump();
  EXPECT_EQ(meta_of()["attempt"], 2);
  EXPECT_EQ(meta_of()["job_id"], "done-1");
  EXPECT_EQ(std::filesystem::last_write_time(home_ / "models/it-done/model.pt"), weights)
      << "nothing was trained again";
  EXPECT_NE(trainer_->log().find("an earlier attempt trained every epoch"), std::string::npos);
}

TEST_F(TrainerProcess, CancelStopsARunningJobWithinABatch) {
  start();
  auto [status, job] = post("/train", R"({"model_id": "it-cancel", "train_opts": {"epochs": 5}})");
  ASSERT_EQ(status, 202);
  std::string id = job["job_id"];
  ASSERT_TRUE(eventually([&] { return get("/jobs/" + id).value("step", 0) > 0; }, 60s));
  auto res = client_->Delete(("/jobs/" + id).c_str());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  auto t0 = std::chrono::steady_clock::now();
  json cancelled = wait_for_state(id, "cancelled", 10s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_LT(cancelled["progress"].get<double>(), 0.5);
  // A second cancel is a conflict, with the JSON error shape.
  res = client_->Delete(("/jobs/" + id).c_str());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 409);
  EXPECT_TRUE(json::parse(res->body).contains("error"));
}

TEST_F(TrainerProcess, SigtermCheckpointsAtTheNextBatchAndExitsZero) {
  start();
  auto [status, job] = post("/train", R"({"model_id": "it-term", "job_id": "term-1", "train_opts": {"epochs": 5}})");
  ASSERT_EQ(status, 202);
  ASSERT_TRUE(eventually([&] { return get("/jobs/term-1").value("step", 0) > 0; }, 60s));
  trainer_->signal(SIGTERM);
  auto exit_status = trainer_->wait_exit(30s);
  ASSERT_TRUE(exit_status) << "no exit 30 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0) << "status " << *exit_status;
  EXPECT_TRUE(std::filesystem::exists(home_ / "jobs/term-1/checkpoint.pt"));
  for (const auto& entry : std::filesystem::directory_iterator(home_ / "jobs/term-1")) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
  EXPECT_NE(trainer_->log().find("job term-1 model it-term: stopped at epoch 1"), std::string::npos);
}

TEST_F(TrainerProcess, BadRequestsGetJsonErrorsAndTheDaemonKeepsServing) {
  start();
  auto expect_error = [&](const httplib::Result& res, int code) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, code) << res->body;
    json body = json::parse(res->body, nullptr, false);
    EXPECT_TRUE(body.is_object() && body.contains("error")) << res->body;
  };
  expect_error(client_->Post("/train", "{\"model_id\": ", "application/json"), 400);
  expect_error(client_->Post("/train", R"({"model_id": "../../etc"})", "application/json"), 400);
  expect_error(client_->Post("/train", R"({"train_opts": {"batch_size": 0}})", "application/json"), 400);
  {  // A body over the cap is refused from its Content-Length, before it is read: a client that
     // sends it all anyway may find the connection closed under its write (EPIPE, no reply to
     // read), so the head alone here.
    testing::RawClient raw(port_, "127.0.0.1", kHost);
    ASSERT_TRUE(
        raw.send("POST /train HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 "Content-Length: 2097152\r\n\r\n"));
    const std::string reply = raw.read_until("}", std::chrono::milliseconds(10000));
    EXPECT_NE(reply.find(" 413 "), std::string::npos) << reply;
    EXPECT_NE(reply.find("\"error\""), std::string::npos) << reply;
  }
  expect_error(client_->Post("/train", "\xff\xfe\x00garbage", "application/json"), 400);
  expect_error(client_->Get("/jobs/%2e%2e"), 400);         // the id ".." is refused
  expect_error(client_->Get("/jobs/..%2F..%2Fetc"), 404);  // decoded to more segments: no route
  expect_error(client_->Get("/no/such/route"), 404);
  expect_error(client_->Put("/train", "{}", "application/json"), 405);
  auto health = client_->Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_TRUE(get("/status")["jobs"].empty()) << "a rejected request must not create a job";
}

// A dataset that is missing or corrupt fails the job with the file's name; the daemon lives.
TEST_F(TrainerProcess, MissingOrCorruptDatasetsFailTheJobNotTheDaemon) {
  TempDir data;
  testing::write_bytes(data / "mnist/train-images-idx3-ubyte", {0x1f, 0x8b, 0x08, 0x03, 1, 2, 3});
  start(data.path().string());
  auto [s1, corrupt] = post("/train", R"({"dataset": "mnist", "train_opts": {"epochs": 1}})");
  ASSERT_EQ(s1, 202);
  json failed = wait_for_state(corrupt["job_id"], "failed", 30s);
  std::string error = failed.value("error", "");
  EXPECT_NE(error.find("train-images-idx3-ubyte"), std::string::npos) << error;

  auto [s2, missing] = post("/train", R"({"dataset": "cifar10", "train_opts": {"epochs": 1}})");
  ASSERT_EQ(s2, 202);
  failed = wait_for_state(missing["job_id"], "failed", 30s);
  EXPECT_NE(failed.value("error", "").find("data_batch_1.bin"), std::string::npos) << failed.dump();

  if (!torch::cuda::is_available()) {
    auto [s3, cuda] = post("/train", R"({"train_opts": {"epochs": 1, "device": "cuda"}})");
    ASSERT_EQ(s3, 202);
    failed = wait_for_state(cuda["job_id"], "failed", 30s);
    EXPECT_NE(failed.value("error", "").find("CUDA"), std::string::npos) << failed.dump();
  }
  EXPECT_EQ(get("/type"), json({{"type", "train"}}));
}

}  // namespace
}  // namespace mlswarm
