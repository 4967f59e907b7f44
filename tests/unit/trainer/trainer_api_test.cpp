#include "trainer_api.h"

#include <gtest/gtest.h>

#include "../../support/wait.h"
#include "mlswarm/signing.h"

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

TEST(TrainerApiSignatures, OnlyCallsSignedWithTheClusterKeyMayStartOrCancelJobs) {
  StatusBoard board;
  JobRunner runner{board, [](const JobSpec&, const TrainingHooks&) { return TrainingOutcome::kCompleted; },
                   JobRunnerOptions{1, 16, "127.0.0.1:48516"}};
  TrainerApi api{runner, board, "127.0.0.1:48516", "cluster-secret"};
  const std::string body = R"({"model_id": "m1", "job_id": "j1", "train_opts": {"epochs": 1}})";
  const long long now = static_cast<long long>(unix_now());
  auto request = [&](const std::string& method, const std::string& target,
                     const std::vector<std::pair<std::string, std::string>>& headers) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.path = target.substr(0, target.find('?'));
    r.body = method == "POST" ? body : "";
    r.headers["content-type"] = "application/json";
    r.headers["host"] = "127.0.0.1:48516";
    for (const auto& [k, v] : headers) {
      std::string name = k;
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = v;
    }
    return r;
  };
  auto signed_by = [&](const std::string& key, const std::string& method, const std::string& target,
                       const std::string& host = "127.0.0.1:48516", long long at = 0) {
    return sign_request(key, method, target, host, method == "POST" ? body : "", at == 0 ? now : at);
  };
  EXPECT_EQ(api.handle(request("POST", "/train", {})).status, 401);
  EXPECT_EQ(api.handle(request("POST", "/train", {{"authorization", "Bearer cluster-secret"}})).status, 401)
      << "the key itself is never accepted on the wire";
  EXPECT_EQ(api.handle(request("POST", "/train", signed_by("wrong-key", "POST", "/train"))).status, 403);
  EXPECT_EQ(
      api.handle(request("POST", "/train", signed_by("cluster-secret", "POST", "/train", "10.99.0.1:48516"))).status,
      403)
      << "signed for another host";
  EXPECT_EQ(
      api.handle(request("POST", "/train", signed_by("cluster-secret", "POST", "/train", "127.0.0.1:48516", now - 600)))
          .status,
      403)
      << "outside the replay window";
  auto tampered = request("POST", "/train", signed_by("cluster-secret", "POST", "/train"));
  tampered.body = R"({"model_id": "m2", "job_id": "j2", "train_opts": {"epochs": 1}})";
  EXPECT_EQ(api.handle(tampered).status, 403) << "a body other than the signed one";
  EXPECT_EQ(api.handle(request("DELETE", "/jobs/j1", {})).status, 401);
  EXPECT_TRUE(board.snapshot().empty()) << "a refused request changed nothing";
  EXPECT_EQ(api.handle(request("GET", "/type", {})).status, 200) << "discovery stays open";
  EXPECT_EQ(api.handle(request("GET", "/status", {})).status, 200);

  const auto good = request("POST", "/train", signed_by("cluster-secret", "POST", "/train"));
  EXPECT_EQ(api.handle(good).status, 202);
  EXPECT_EQ(api.handle(good).status, 403) << "a replayed request";
  EXPECT_EQ(board.snapshot().size(), 1u);
}

TEST(TrainerApiSignatures, TypeAnswersAChallengeWithTheProofOnlyForItsOwnAddress) {
  StatusBoard board;
  JobRunner runner{board, [](const JobSpec&, const TrainingHooks&) { return TrainingOutcome::kCompleted; },
                   JobRunnerOptions{1, 16, "127.0.0.1:48516"}};
  TrainerApi api{runner, board, "127.0.0.1:48516", "cluster-secret"};
  const std::string challenge = random_hex(16);
  HttpRequest r;
  r.method = "GET";
  r.path = "/type";
  r.headers["x-mlswarm-challenge"] = challenge;
  r.headers["host"] = "127.0.0.1:48516";
  json reply = json::parse(api.handle(r).body);
  EXPECT_EQ(reply["type"], "train");
  EXPECT_EQ(reply["proof"], challenge_proof("cluster-secret", challenge, "127.0.0.1:48516"));
  r.headers["host"] = "10.99.0.1:48516";
  EXPECT_FALSE(json::parse(api.handle(r).body).contains("proof")) << "no proof for a host that is not this trainer";
}

}  // namespace
}  // namespace mlswarm
