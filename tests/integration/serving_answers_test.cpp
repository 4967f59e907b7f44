// Serving changes must not change answers: 1,000 Fashion-MNIST test images classified by a
// real controller over HTTP (the fast /predict path, one image per request from 8 clients
// so that requests share forward passes; and all 1,000 in one request through both the
// fast and the full JSON parser) against the model run here, in this process, one image at
// a time, from the same files: the path serving had before any of its optimisations.

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cluster_fixture.h"
#include "mlswarm/torch/model_zoo.h"

namespace mlswarm {
namespace {

/// What the model alone answers for each image: its probabilities and its class.
struct Reference {
  std::vector<std::vector<float>> probabilities;
  std::vector<int> classes;
};

// The reference: the model alone, one image a pass, on pixels the JSON library read.
Reference reference_answers(const std::filesystem::path& home, const json& examples) {
  ModelMeta meta;
  torch::nn::Sequential model = load_trained_model(home, "answers", &meta);
  torch::NoGradGuard no_grad;
  const auto mean = torch::tensor(std::vector<float>(meta.mean.begin(), meta.mean.end())).view({1, -1, 1, 1});
  const auto stdev = torch::tensor(std::vector<float>(meta.std.begin(), meta.std.end())).view({1, -1, 1, 1});
  Reference expected{std::vector<std::vector<float>>(1000), std::vector<int>(1000)};
  for (std::size_t i = 0; i < 1000; ++i) {
    std::vector<float> px;
    for (const auto& row : examples[i][0]) {
      for (const auto& v : row) px.push_back(static_cast<float>(v.get<double>()));
    }
    auto x = torch::from_blob(px.data(), {1, 1, 28, 28}).clone();
    auto p = torch::softmax(model->forward((x - mean) / stdev), 1).contiguous();
    expected.probabilities[i].assign(p.data_ptr<float>(), p.data_ptr<float>() + 10);
    expected.classes[i] = static_cast<int>(p.argmax(1).item<std::int64_t>());
  }
  return expected;
}

// Served: one image per request, 8 clients at once (batched with each other).
std::vector<json> serve_one_image_per_request(int controller_port, const json& examples) {
  std::vector<json> served(1000);
  std::atomic<std::size_t> next{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      httplib::Client client("127.0.0.1", controller_port);
      client.set_read_timeout(30s);
      for (std::size_t i; (i = next++) < 1000;) {
        auto res = client.Post("/predict", json{{"model_id", "answers"}, {"examples", {examples[i]}}}.dump(),
                               "application/json");
        served[i] = res && res->status == 200 ? json::parse(res->body) : json();
      }
    });
  }
  for (auto& t : clients) t.join();
  return served;
}

/// Every served answer holds the model's class and, within float rounding, its probabilities.
void expect_served_like_the_model(const std::vector<json>& served, const Reference& expected) {
  double worst = 0;
  for (std::size_t i = 0; i < 1000; ++i) {
    ASSERT_TRUE(served[i].contains("probabilities")) << "image " << i << ": " << served[i].dump();
    EXPECT_EQ(served[i]["class_idxs"][0], expected.classes[i]) << "image " << i;
    for (std::size_t k = 0; k < 10; ++k) {
      worst = std::max(worst, std::abs(served[i]["probabilities"][0][k].get<double>() - expected.probabilities[i][k]));
    }
  }
  // Batches of different sizes take different BLAS blockings: float rounding, no more.
  EXPECT_LT(worst, 1e-5) << "largest difference from the model's own probabilities";
  std::cout << "largest difference over 1,000 images, 10,000 probabilities: " << worst << "\n";
}

TEST_F(ClusterTest, ServedProbabilitiesEqualTheModelsOwnOnAThousandTestImages) {
  start_trainer(2);
  start_controller();
  std::string id = submit("answers", 2000, 1);
  ASSERT_TRUE(eventually([&] { return job_in(id, "succeeded"); }, 180s)) << job(id).dump();
  json page = get("/datasets/fashion-mnist/examples?split=test&start=0&count=1000");
  const json& examples = page["examples"];
  ASSERT_EQ(examples.size(), 1000u);

  const Reference expected = reference_answers(home_.path(), examples);
  const std::vector<json> served = serve_one_image_per_request(controller_port_, examples);
  ASSERT_NO_FATAL_FAILURE(expect_served_like_the_model(served, expected));

  // All 1,000 in one request, through the fast path and through the full parser (an extra
  // key sends it there): the same batch, so the same floats exactly.
  json body{{"model_id", "answers"}, {"examples", examples}};
  auto [fast_status, fast] = post("/predict", body.dump());
  body["comment"] = "an unknown key: read by the full JSON parser";
  auto [full_status, full] = post("/predict", body.dump());
  ASSERT_EQ(fast_status, 200) << fast.dump();
  ASSERT_EQ(full_status, 200) << full.dump();
  EXPECT_EQ(fast["probabilities"], full["probabilities"]);
  EXPECT_EQ(fast["class_idxs"], full["class_idxs"]);
  for (std::size_t i = 0; i < 1000; ++i) EXPECT_EQ(fast["class_idxs"][i], expected.classes[i]) << "image " << i;
}

}  // namespace
}  // namespace mlswarm
