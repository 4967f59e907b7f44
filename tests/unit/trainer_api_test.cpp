#include "trainer_api.h"

#include <gtest/gtest.h>

#include "../support/wait.h"

namespace mlswarm {
namespace {

using nlohmann::json;

/// The API over a runner whose jobs finish at once.
class TrainerApiTest : public ::testing::Test {
 protected:
  HttpReply call(const std::string& method, const std::string& path, const std::string& body = "",
                 const std::string& content_type = "application/json") {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.body = body;
    if (!content_type.empty()) r.headers["content-type"] = content_type;
    return api_.handle(r);
  }
  static json body_of(const HttpReply& reply) { return json::parse(reply.body); }
  static void expect_error(const HttpReply& reply, int status, const std::string& field = "") {
    EXPECT_EQ(reply.status, status) << reply.body;
    json body = json::parse(reply.body);
    ASSERT_TRUE(body.contains("error")) << reply.body;
    EXPECT_TRUE(body["error"]["code"].is_string());
    EXPECT_TRUE(body["error"]["message"].is_string());
    if (!field.empty()) {
      EXPECT_EQ(body["error"].value("field", ""), field) << reply.body;
    }
  }

  StatusBoard board_;
  JobRunner runner_{board_, [](const JobSpec&, const TrainingHooks&) { return TrainingOutcome::kCompleted; },
                    JobRunnerOptions{1, 16, "127.0.0.2:48516"}};
  TrainerApi api_{runner_, board_, "127.0.0.2:48516"};
};

TEST_F(TrainerApiTest, TypeAndHealth) {
  EXPECT_EQ(body_of(call("GET", "/type")), json({{"type", "train"}}));
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(TrainerApiTest, TrainAnswers202WithTheJobAndStatusListsIt) {
  HttpReply reply = call("POST", "/train", R"({"model_id": "m1", "train_opts": {"epochs": 1}})");
  ASSERT_EQ(reply.status, 202) << reply.body;
  json job = body_of(reply);
  EXPECT_EQ(job["model_id"], "m1");
  EXPECT_EQ(job["state"], "queued");
  std::string id = job["job_id"];
  ASSERT_TRUE(testing::eventually([&] { return body_of(call("GET", "/jobs/" + id))["state"] == "succeeded"; }));
  json status = body_of(call("GET", "/status"));
  EXPECT_EQ(status["trainer"]["address"], "127.0.0.2:48516");
  EXPECT_EQ(status["trainer"]["capacity"], 1);
  ASSERT_EQ(status["jobs"].size(), 1u);
  EXPECT_EQ(status["jobs"][0]["job_id"], id);
}

TEST_F(TrainerApiTest, BadSpecsAre400WithTheFieldAndChangeNothing) {
  expect_error(call("POST", "/train", "{not json"), 400);
  expect_error(call("POST", "/train", ""), 400);
  expect_error(call("POST", "/train", R"({"model_id": "../../etc"})"), 400, "model_id");
  expect_error(call("POST", "/train", R"({"train_opts": {"batch_size": 0}})"), 400, "train_opts.batch_size");
  expect_error(call("POST", "/train", R"({"train_opts": {"epochs": -2}})"), 400, "train_opts.epochs");
  expect_error(call("POST", "/train", R"({"model_type": "transformer"})"), 400, "model_type");
  expect_error(call("POST", "/train", R"({"dataset": "../x"})"), 400, "dataset");
  expect_error(call("POST", "/train", R"({"a": 1})", "text/plain"), 415);
  EXPECT_TRUE(body_of(call("GET", "/status"))["jobs"].empty());
}

TEST_F(TrainerApiTest, UnknownRoutesMethodsAndIds) {
  expect_error(call("GET", "/nope"), 404);
  expect_error(call("GET", "/train"), 405);
  expect_error(call("POST", "/status"), 405);
  expect_error(call("GET", "/jobs/unknown"), 404, "job_id");
  expect_error(call("DELETE", "/jobs/unknown"), 404, "job_id");
  expect_error(call("GET", "/jobs/..%2f.."), 400, "job_id");
}

TEST(TrainerApiToken, OnlyTheClusterTokenMayStartOrCancelJobs) {
  StatusBoard board;
  JobRunner runner{board, [](const JobSpec&, const TrainingHooks&) { return TrainingOutcome::kCompleted; },
                   JobRunnerOptions{1, 16, "127.0.0.2:48516"}};
  TrainerApi api{runner, board, "127.0.0.2:48516", "cluster-secret"};
  auto call = [&](const std::string& method, const std::string& path, const std::string& auth) {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.body = R"({"model_id": "m1", "job_id": "j1", "train_opts": {"epochs": 1}})";
    r.headers["content-type"] = "application/json";
    if (!auth.empty()) r.headers["authorization"] = auth;
    return api.handle(r);
  };
  EXPECT_EQ(call("POST", "/train", "").status, 401);
  EXPECT_EQ(call("POST", "/train", "Bearer wrong").status, 403);
  EXPECT_EQ(call("DELETE", "/jobs/j1", "").status, 401);
  EXPECT_TRUE(board.snapshot().empty()) << "a refused request changed nothing";
  EXPECT_EQ(call("GET", "/type", "").status, 200) << "discovery stays open";
  EXPECT_EQ(call("GET", "/status", "").status, 200);
  EXPECT_EQ(call("POST", "/train", "Bearer cluster-secret").status, 202);
  EXPECT_EQ(board.snapshot().size(), 1u);
}

}  // namespace
}  // namespace mlswarm
