// The controller's routes called as functions, over a real registry, a real (not started)
// cluster and real models trained here on a tiny synthetic MNIST.

#include "controller_api.h"

#include <chrono>

#include <gtest/gtest.h>
#include <stb_image_write.h>

#include "../../../support/bar_mnist.h"
#include "../../../support/temp_dir.h"
#include "mlswarm/image_decode.h"
#include "mlswarm/error.h"
#include "training.h"

namespace mlswarm {
namespace {

using nlohmann::json;
using testing::TempDir;
using testing::write_bar_mnist;
using testing::write_bytes;

std::string encode_png(int w, int h, int comp, const std::vector<unsigned char>& pixels) {
  std::string out;
  stbi_write_png_to_func(
      [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); },
      &out, w, h, comp, pixels.data(), w * comp);
  return out;
}

class ControllerApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir;
    home_ = new TempDir;
    write_bar_mnist(data_->path(), 200, 50);
    set_training_threads(1);
    DatasetCache cache(data_->path(), home_->path());
    TrainingEnv env{home_->path(), &cache};
    JobSpec spec = parse_job_spec(json::parse(
        R"({"job_id": "bars", "model_id": "bars", "dataset": "mnist",
            "train_opts": {"epochs": 2, "batch_size": 16, "lr": 0.02, "device": "cpu"}})"));
    ASSERT_EQ(run_training(spec, env, {}), TrainingOutcome::kCompleted);
  }
  static void TearDownTestSuite() {
    delete data_;
    delete home_;
  }

  HttpReply call(const std::string& method, const std::string& path, const std::string& body = "") {
    HttpRequest r;
    r.method = method;
    auto q = path.find('?');
    r.path = path.substr(0, q);
    if (q != std::string::npos) {
      std::string query = path.substr(q + 1);
      std::size_t i = 0;
      while (i < query.size()) {
        std::size_t amp = query.find('&', i);
        std::string kv = query.substr(i, amp == std::string::npos ? std::string::npos : amp - i);
        auto eq = kv.find('=');
        r.query[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
        i = amp == std::string::npos ? query.size() : amp + 1;
      }
    }
    r.body = body;
    r.headers["content-type"] = "application/json";
    return api_.handle(r);
  }
  HttpReply classify(const std::string& content, const std::string& content_type = "multipart/form-data; boundary=x") {
    HttpRequest r;
    r.method = "POST";
    r.path = "/classify";
    r.headers["content-type"] = content_type;
    if (!content.empty()) r.files.push_back({"image", "digit.png", "image/png", content});
    return api_.handle(r);
  }
  static int status_of(const HttpReply& reply) { return reply.status; }
  static json body(const HttpReply& reply) { return json::parse(reply.body); }
  /// A 28x28 example of class k as nested [1][28][28] pixel intensities.
  static json bar_example(int k) {
    json rows = json::array();
    for (int y = 0; y < 28; ++y) {
      json row = json::array();
      for (int x = 0; x < 28; ++x) row.push_back(y == 2 * k + 4 ? 0.85 : ((y * 28 + x) * 31 % 40) / 255.0);
      rows.push_back(row);
    }
    return json::array({rows});
  }

  static TempDir* data_;
  static TempDir* home_;
  TempDir state_;
  JobRegistry registry_{state_.path()};
  static ClusterOptions cluster_options() {
    ClusterOptions options;
    options.subnet = parse_subnet("127.0.0.0/30");
    options.max_queued = 100;
    return options;
  }

  HttpTrainerTransport transport_{TrainerCallOptions{}};  // never called: the cluster is not started
  Cluster cluster_{registry_, transport_, cluster_options()};
  ModelServer models_{home_->path(), BatchingOptions{8, std::chrono::microseconds(500), 1}};
  DatasetCache datasets_{data_->path(), home_->path()};
  ControllerApi api_{cluster_, registry_, models_, datasets_,
                     ControllerApiOptions{home_->path(), 64, 1u << 20, "", false}};
};

TempDir* ControllerApiTest::data_ = nullptr;
TempDir* ControllerApiTest::home_ = nullptr;

TEST_F(ControllerApiTest, TypeHealthAndReadinessWithoutTrainers) {
  EXPECT_EQ(body(call("GET", "/type")), json({{"type", "controller"}}));
  EXPECT_EQ(status_of(call("GET", "/healthz")), 200);
  HttpReply ready = call("GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_FALSE(body(ready)["error"]["message"].get<std::string>().empty());
}

TEST_F(ControllerApiTest, TrainWithNoTrainerIsAcceptedAsQueued) {
  HttpReply reply = call("POST", "/train", R"({"model_id": "later", "train_opts": {"epochs": 1}})");
  ASSERT_EQ(reply.status, 202) << reply.body;
  std::string id = body(reply)["job_id"];
  EXPECT_EQ(body(call("GET", "/jobs/" + id))["state"], "queued");
  EXPECT_EQ(body(call("GET", "/jobs"))["jobs"].size(), 1u);
  EXPECT_EQ(body(call("GET", "/status"))["jobs"][0]["job_id"], id);
  EXPECT_EQ(body(call("DELETE", "/jobs/" + id))["state"], "cancelled");
  EXPECT_EQ(status_of(call("DELETE", "/jobs/" + id)), 409);
  EXPECT_EQ(status_of(call("POST", "/train", R"({"model_id": "../../etc"})")), 400);
  EXPECT_EQ(status_of(call("POST", "/train", "{")), 400);
  EXPECT_EQ(body(call("GET", "/jobs"))["jobs"].size(), 1u) << "rejected specs create no job";
}

TEST_F(ControllerApiTest, PredictClassifiesAndNamesTheClasses) {
  json examples = json::array();
  for (int k = 0; k < 10; ++k) examples.push_back(bar_example(k));
  HttpReply reply = call("POST", "/predict", json{{"model_id", "bars"}, {"examples", examples}}.dump());
  ASSERT_EQ(reply.status, 200) << reply.body;
  json out = body(reply);
  ASSERT_EQ(out["class_idxs"].size(), 10u);
  int right = 0;
  for (int k = 0; k < 10; ++k) right += out["class_idxs"][k] == k ? 1 : 0;
  EXPECT_GE(right, 7) << out["class_idxs"].dump();
  EXPECT_EQ(out["class_tags"][3], std::to_string(out["class_idxs"][3].get<int>()));
  EXPECT_EQ(out["probabilities"][0].size(), 10u);
  EXPECT_EQ(out["version"], 2);
  // A flat C*H*W example means the same as a nested one.
  json flat = json::array();
  const json nested = bar_example(5);
  for (const auto& row : nested[0]) {
    for (const auto& v : row) flat.push_back(v);
  }
  json flat_out = body(call("POST", "/predict", json{{"model_id", "bars"}, {"examples", json::array({flat})}}.dump()));
  EXPECT_EQ(flat_out["class_idxs"][0], out["class_idxs"][5]);
}

TEST_F(ControllerApiTest, BadPredictionsAreClearErrors) {
  auto predict = [&](const json& body) { return call("POST", "/predict", body.dump()); };
  EXPECT_EQ(status_of(predict({{"model_id", "nope"}, {"examples", {bar_example(1)}}})), 404);
  EXPECT_EQ(status_of(predict({{"model_id", "bars"}, {"examples", json::array()}})), 400);
  EXPECT_EQ(status_of(predict({{"model_id", "bars"}, {"examples", {{1, 2, 3}}}})), 400);
  EXPECT_EQ(status_of(predict({{"model_id", "bars"}, {"examples", {json::array({bar_example(1), bar_example(2)})}}})),
            400);
  EXPECT_EQ(status_of(predict({{"model_id", "bars"}, {"examples", {json(std::vector<int>(784, 255))}}})), 400);
  EXPECT_EQ(status_of(predict({{"model_id", "bars"}, {"examples", {json(std::vector<std::string>(784, "a"))}}})), 400);
  EXPECT_EQ(status_of(predict({{"model_id", "bars"}})), 400);
  EXPECT_EQ(status_of(predict({{"model_id", "../bars"}, {"examples", {bar_example(1)}}})), 400);
  EXPECT_EQ(status_of(predict(json{{"model_id", "bars"}, {"examples", json(std::vector<json>(65, bar_example(1)))}})),
            413);
  EXPECT_EQ(status_of(call("POST", "/predict", R"({"model_id": "bars", "examples": [NaN]})")), 400);
  HttpReply wrong = predict({{"model_id", "bars"}, {"examples", {{0.5, 0.5}}}});
  EXPECT_NE(body(wrong)["error"]["message"].get<std::string>().find("[1][28][28]"), std::string::npos) << wrong.body;
}

TEST_F(ControllerApiTest, ModelsAndDatasets) {
  json models = body(call("GET", "/models"))["models"];
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0]["model_id"], "bars");
  EXPECT_EQ(body(call("GET", "/models/bars"))["class_names"].size(), 10u);
  EXPECT_EQ(status_of(call("GET", "/models/none")), 404);
  EXPECT_EQ(body(call("GET", "/datasets"))["datasets"].size(), 3u);
  EXPECT_EQ(body(call("GET", "/datasets/cifar10"))["input_shape"], json({3, 32, 32}));
  EXPECT_EQ(status_of(call("GET", "/datasets/imagenet")), 404);
  json page = body(call("GET", "/datasets/mnist/examples?split=test&start=10&count=5"));
  ASSERT_EQ(page["examples"].size(), 5u);
  EXPECT_EQ(page["examples"][0].size(), 1u);
  EXPECT_EQ(page["examples"][0][0].size(), 28u);
  EXPECT_EQ(page["labels"][0], 0) << "example 10 of the bar set is class 0";
  EXPECT_EQ(status_of(call("GET", "/datasets/mnist/examples?start=-1")), 400);
  EXPECT_EQ(status_of(call("GET", "/datasets/mnist/examples?count=1000")), 400);
  EXPECT_EQ(status_of(call("GET", "/datasets/mnist/examples?split=valid")), 400);
  EXPECT_EQ(status_of(call("GET", "/datasets/mnist/examples?start=50")), 400);
  // The dataset's own examples, sent back to /predict, classify as their labels.
  json prediction = body(call("POST", "/predict", json{{"model_id", "bars"}, {"examples", page["examples"]}}.dump()));
  EXPECT_EQ(prediction["class_idxs"], page["labels"]);
}

TEST_F(ControllerApiTest, ClassifyAcceptsImagesAndRefusesOtherUploads) {
  // A 56x56 RGB picture of the class-7 bar: resized and turned grey on the way in.
  std::vector<unsigned char> rgb(56 * 56 * 3, 10);
  for (int y = 36; y < 38; ++y) {
    for (int x = 0; x < 56 * 3; ++x) rgb[static_cast<std::size_t>(y) * 56 * 3 + x] = 220;
  }
  HttpReply reply = classify(encode_png(56, 56, 3, rgb));
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(body(reply)["model_id"], "bars") << "the newest model serves when none is named";
  EXPECT_TRUE(body(reply)["class"].is_string());
  EXPECT_EQ(status_of(classify("just some text, not an image")), 415);
  std::string png = encode_png(56, 56, 3, rgb);
  EXPECT_EQ(status_of(classify(png.substr(0, 40))), 400) << "a truncated PNG does not decode";
  EXPECT_EQ(status_of(classify("")), 400);
  EXPECT_EQ(status_of(classify("", "application/json")), 415);
}

TEST(ImageDecode, ProducesPlanarValuesInTheModelsShape) {
  std::vector<unsigned char> grey(4 * 4, 255);
  std::vector<float> out = decode_image(encode_png(4, 4, 1, grey), 3, 2, 2);
  ASSERT_EQ(out.size(), 12u);
  for (float v : out) EXPECT_NEAR(v, 1.0f, 1e-6);
  EXPECT_THROW(decode_image("BM garbage", 1, 28, 28), Error);
}

// A model retrained while the controller serves it is picked up by the next request.
TEST_F(ControllerApiTest, ANewerModelIsServedWithoutARestart) {
  EXPECT_EQ(models_.meta("bars").version, 2);
  std::size_t loads = models_.loads();
  DatasetCache cache(data_->path(), home_->path());
  TrainingEnv env{home_->path(), &cache};
  JobSpec spec = parse_job_spec(json::parse(
      R"({"job_id": "bars-3", "model_id": "bars", "dataset": "mnist",
          "train_opts": {"epochs": 3, "batch_size": 16, "lr": 0.02, "device": "cpu"}})"));
  ASSERT_EQ(run_training(spec, env, {}), TrainingOutcome::kCompleted);
  // meta.json is re-checked at most every 100 ms, so the new epoch shows within that.
  json out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    out = body(call("POST", "/predict", json{{"model_id", "bars"}, {"examples", {bar_example(2)}}}.dump()));
  } while (out["version"] != 3 && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(out["version"], 3);
  EXPECT_EQ(models_.loads(), loads + 1);
}

TEST_F(ControllerApiTest, OneRouteTableSaysWhoMayCallWhat) {
  auto access = [&](const std::string& method, const std::string& path) -> std::optional<Access> {
    const auto match = api_.routes().match(method, path);
    if (match.route == nullptr) return std::nullopt;
    return match.route->access;
  };
  EXPECT_EQ(access("GET", "/type"), Access::kOpen);
  EXPECT_EQ(access("GET", "/healthz"), Access::kOpen);
  EXPECT_EQ(access("GET", "/readyz"), Access::kOpen);
  for (const char* path : {"/status", "/jobs", "/jobs/j1", "/models", "/models/m", "/datasets",
                           "/datasets/fashion-mnist/examples", "/metrics"}) {
    EXPECT_EQ(access("GET", path), Access::kRead) << path;
  }
  EXPECT_EQ(access("POST", "/train"), Access::kWrite);
  EXPECT_EQ(access("DELETE", "/jobs/j1"), Access::kWrite);
  EXPECT_EQ(access("POST", "/predict"), Access::kWrite);
  EXPECT_EQ(access("POST", "/classify"), Access::kWrite);
  EXPECT_EQ(access("POST", "/status"), std::nullopt) << "a known path with another method: 405";
  EXPECT_EQ(api_.routes().match("POST", "/status").allow, "GET");
  EXPECT_EQ(access("GET", "/nothing"), std::nullopt);
  EXPECT_EQ(access("GET", "/healthz/x"), std::nullopt);
  // The 405 carries Allow from the table.
  HttpReply reply = call("PUT", "/jobs/j1");
  EXPECT_EQ(reply.status, 405);
  EXPECT_EQ(reply.headers["Allow"], "GET, DELETE");
}

TEST_F(ControllerApiTest, WithATokenUnknownRoutesAreNotOpen) {
  ControllerApi secured{cluster_, registry_, models_, datasets_,
                        ControllerApiOptions{home_->path(), 64, 1u << 20, "s3cret", true}};
  HttpRequest r;
  r.method = "GET";
  r.path = "/nothing";
  EXPECT_EQ(secured.handle(r).status, 401) << "no route is revealed without the token";
  r.headers["authorization"] = "Bearer s3cret";
  EXPECT_EQ(secured.handle(r).status, 404);
  r.path = "/status";
  r.headers.clear();
  EXPECT_EQ(secured.handle(r).status, 200) << "public reads";
}

TEST_F(ControllerApiTest, BodiesOverTheRouteCapAreRefusedBeforeTheyAreRead) {
  HttpRequest head;
  head.method = "POST";
  head.path = "/train";
  head.headers["content-length"] = std::to_string(kMaxSpecBytes + 1);
  auto refused = api_.admit(head);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 413);
  head.path = "/predict";
  EXPECT_FALSE(api_.admit(head)) << "/predict takes large bodies";
  head.method = "DELETE";
  head.path = "/jobs/j1";
  head.headers["content-length"] = "10";
  ASSERT_TRUE(api_.admit(head));
  EXPECT_EQ(api_.admit(head)->status, 413);
}

}  // namespace
}  // namespace mlswarm
