// Served names and rollouts on real daemons: a candidate trained worse refused at evaluation, a
// candidate that fails a live gate rolled back from a canary step, a good one promoted through
// every step under load with no failed request and a sticky split, and the leader killed
// mid-rollout with the follower carrying it to its end.

#include <atomic>
#include <csignal>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <stb/stb_image_write.h>

#include "cluster_fixture.h"
#include "mlswarm/job.h"

namespace mlswarm {
namespace {

/// `/predict` to a name from a thread of its own, each request with one of `keys` keys (its
/// X-Request-Key), recording which variant answered it, when, and whether it failed.
class NameLoad {
 public:
  struct Answer {
    double at = 0;  ///< Unix seconds
    std::string key;
    std::string variant;
  };
  NameLoad(int port, std::string name, json examples, int keys, std::string host = "127.0.0.1")
      : name_(std::move(name)), examples_(std::move(examples)), host_(std::move(host)) {
    thread_ = std::thread([this, port, keys] { run(port, keys); });
  }
  ~NameLoad() { stop(); }
  void stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Answer> answers() const {
    std::lock_guard lock(mutex_);
    return answers_;
  }
  int failed() const { return failed_.load(); }
  std::string first_failure() const {
    std::lock_guard lock(mutex_);
    return first_failure_;
  }

 private:
  void run(int port, int keys) {
    httplib::Client client(host_, port);
    client.set_read_timeout(10s);
    const std::string body = json{{"model_id", name_}, {"examples", examples_}}.dump();
    for (int i = 0; !done_; ++i) {
      const std::string key = "client-" + std::to_string(i % keys);
      auto res = client.Post("/predict", httplib::Headers{{"X-Request-Key", key}}, body, "application/json");
      const double at = unix_now();
      std::lock_guard lock(mutex_);
      if (!res || res->status != 200) {
        if (++failed_ == 1) first_failure_ = res ? res->body : httplib::to_string(res.error());
        continue;
      }
      answers_.push_back({at, key, json::parse(res->body).value("variant", "")});
    }
  }
  std::string name_;
  json examples_;
  std::string host_;
  std::atomic<bool> done_{false};
  std::atomic<int> failed_{0};
  mutable std::mutex mutex_;
  std::vector<Answer> answers_;
  std::string first_failure_;
  std::thread thread_;
};

class RolloutTest : public ClusterTest {
 protected:
  json deployment(const std::string& name) { return get("/deployments/" + name); }
  std::string rollout_state(const std::string& name) {
    const json d = deployment(name);
    return d.contains("rollout") && d["rollout"].is_object() ? d["rollout"].value("state", "") : "";
  }
  bool ended(const std::string& name) {
    const std::string s = rollout_state(name);
    return s == "promoted" || s == "rolled_back" || s == "aborted";
  }
  /// Trains `model_id` on `examples` images for `epochs` and waits for it.
  void train(const std::string& model_id, int examples, int epochs, int seed = 1) {
    auto [status, body] = post("/train", json{{"model_id", model_id},
                                              {"example_idxs", {0, examples}},
                                              {"test_idxs", {0, kTestImages}},
                                              {"train_opts", {{"epochs", epochs}, {"batch_size", 64}, {"seed", seed}}}}
                                             .dump());
    ASSERT_EQ(status, 202) << body.dump();
    const std::string id = body["job_id"];
    ASSERT_TRUE(eventually([&] { return job_in(id, "succeeded"); }, 300s)) << job(id).dump();
  }
  void put_deployment(const std::string& name, const std::string& model_id) {
    httplib::Client c("127.0.0.1", controller_port_);
    auto res = c.Put(("/deployments/" + name).c_str(), json{{"model_id", model_id}}.dump(), "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
  }
  json examples(int count) {
    return get("/datasets/fashion-mnist/examples?split=test&count=" + std::to_string(count))["examples"];
  }
  json ended_on_follower(const std::string& name);
  void expect_served_the_split(const NameLoad& load, double canary_at);
  /// Waits for `name` to serve `model_id` (a deploy from a job or a sweep happens on the
  /// leader's next pass after it ends).
  bool serves(const std::string& name, const std::string& model_id, std::chrono::seconds within) {
    // The stable changes at a put or at a promotion only.
    return eventually(
        [&] {
          auto res = client_->Get(("/deployments/" + name).c_str());
          return res && res->status == 200 && json::parse(res->body)["stable"].value("model_id", "") == model_id;
        },
        within);
  }
};

/// The follower's view of `name` once its rollout has ended (the leader is gone).
json RolloutTest::ended_on_follower(const std::string& name) {
  json d;
  EXPECT_TRUE(eventually(
      [&] {
        auto res = other_->Get(("/deployments/" + name).c_str());
        if (!res || res->status != 200) return false;
        d = json::parse(res->body);
        const std::string state = d["rollout"].value("state", "");
        return state == "promoted" || state == "rolled_back";
      },
      120s))
      << d.dump(2);
  return d;
}

/// The replica `load` went to served the leader's split: no candidate before the canary
/// decision (at `canary_at`), and one soon after.
void RolloutTest::expect_served_the_split(const NameLoad& load, double canary_at) {
  double first_candidate_at = 0;
  for (const auto& a : load.answers()) {
    if (a.variant == "candidate" && (first_candidate_at == 0 || a.at < first_candidate_at)) first_candidate_at = a.at;
  }
  ASSERT_GT(first_candidate_at, 0) << "the replica never served the candidate";
  std::cout << "the replica's first candidate answer came " << first_candidate_at - canary_at
            << " s after the leader's canary decision\n";
  EXPECT_GE(first_candidate_at, canary_at - 0.05) << "a candidate answer before the canary";
  EXPECT_LT(first_candidate_at - canary_at, 3.0) << "the split reached the replica late";
}

/// A 28x28 grey PNG (a trouser's two legs), as a client uploads one.
std::string trouser_png() {
  std::vector<unsigned char> pixels(28 * 28, 0);
  for (int y = 3; y <= 25; ++y) {
    for (int x = 0; x < 28; ++x) {
      if ((x >= 8 && x <= 12) || (x >= 15 && x <= 19) || (y <= 8 && x >= 8 && x <= 19)) pixels[y * 28 + x] = 220;
    }
  }
  std::string out;
  stbi_write_png_to_func([](void* context, void* data,
                            int size) { static_cast<std::string*>(context)->append(static_cast<char*>(data), size); },
                         &out, 28, 28, 1, pixels.data(), 28);
  return out;
}

// Issue 39: a candidate trained worse (1 epoch on 300 images) against a stable (2 epochs on
// 6,000) is refused at evaluation, before any live request sees it, with the figures.
TEST_F(RolloutTest, ACandidateTrainedWorseIsRefusedAtEvaluation) {
  start_trainer(2);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 10s));
  train("stable", 6000, 2);
  train("worse", 300, 1);
  put_deployment("fmnist", "stable");
  auto [status, body] =
      post("/deployments/fmnist/rollout", json{{"model_id", "worse"}, {"eval_idxs", {0, 2000}}}.dump());
  ASSERT_EQ(status, 202) << body.dump();
  EXPECT_EQ(post("/deployments/fmnist/rollout", json{{"model_id", "worse"}}.dump()).first, 409) << "a second rollout";
  ASSERT_TRUE(eventually([&] { return ended("fmnist"); }, 120s)) << deployment("fmnist").dump(2);
  const json d = deployment("fmnist");
  std::cout << "rolled back at evaluation: " << d["rollout"]["reason"] << "\n";
  EXPECT_EQ(d["rollout"]["state"], "rolled_back") << d.dump(2);
  EXPECT_NE(d["rollout"]["reason"].get<std::string>().find("evaluation on 2000 held-out examples"), std::string::npos);
  EXPECT_EQ(d["stable"]["model_id"], "stable") << "the stable serves on";
  auto [served, answer] = post("/predict", json{{"model_id", "fmnist"}, {"examples", examples(1)}}.dump());
  ASSERT_EQ(served, 200) << answer.dump();
  EXPECT_EQ(answer["model_id"], "stable");
  EXPECT_EQ(answer["deployment"], "fmnist");
  EXPECT_EQ(answer["variant"], "stable");
  // /classify and KServe v2 take the name where they take a model id, and say who answered.
  httplib::MultipartFormDataItems items{{"image", trouser_png(), "t.png", "image/png"}, {"model_id", "fmnist", "", ""}};
  auto classified = client_->Post("/classify", items);
  ASSERT_TRUE(classified);
  ASSERT_EQ(classified->status, 200) << classified->body;
  const json c = json::parse(classified->body);
  EXPECT_EQ(c["model_id"], "stable");
  EXPECT_EQ(c["deployment"], "fmnist");
  EXPECT_EQ(c["variant"], "stable");
  std::vector<float> flat(784, 0.5f);
  const json v2_body = {
      {"inputs", {{{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "FP32"}, {"data", flat}}}}};
  auto inferred = client_->Post("/v2/models/fmnist/infer", v2_body.dump(), "application/json");
  ASSERT_TRUE(inferred);
  ASSERT_EQ(inferred->status, 200) << inferred->body;
  EXPECT_EQ(json::parse(inferred->body)["model_name"], "stable") << inferred->body;
  EXPECT_EQ(inferred->get_header_value("X-Mlswarm-Deployment"), "fmnist");
  EXPECT_EQ(inferred->get_header_value("X-Mlswarm-Variant"), "stable");
  EXPECT_EQ(post("/deployments/fmnist/rollout", json{{"model_id", "stable"}}.dump()).first, 409)
      << "the version it serves already";
  EXPECT_EQ(post("/deployments/nope/rollout", json{{"model_id", "worse"}}.dump()).first, 404);
  EXPECT_EQ(post("/deployments/fmnist/rollout", json{{"model_id", "worse"}, {"steps", {50, 20}}}.dump()).first, 400);
}

// Issue 39: a good candidate promoted through every step while clients send /predict to the
// name: no request fails, each step's candidate share is within 10 points of its weight, and a
// key always gets the same variant within a step.
TEST_F(RolloutTest, AGoodCandidateIsPromotedThroughEveryStepUnderLoad) {
  start_trainer(2);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 10s));
  train("first", 3000, 1, 1);
  train("second", 3000, 1, 2);
  put_deployment("live", "first");
  NameLoad load(controller_port_, "live", examples(1), 400);
  const json spec = {{"model_id", "second"},
                     {"eval_idxs", {0, 1000}},
                     {"shadow_seconds", 2},
                     {"steps", {20, 50, 100}},
                     {"step_seconds", 3},
                     {"min_requests", 5},
                     {"gates", {{"max_accuracy_drop", 0.05}, {"max_class_recall_drop", 0.3}, {"min_agreement", 0.6}}}};
  auto [status, body] = post("/deployments/live/rollout", spec.dump());
  ASSERT_EQ(status, 202) << body.dump();
  ASSERT_TRUE(eventually([&] { return ended("live"); }, 180s)) << deployment("live").dump(2);
  load.stop();
  const json d = deployment("live");
  ASSERT_EQ(d["rollout"]["state"], "promoted") << d.dump(2);
  EXPECT_EQ(d["stable"]["model_id"], "second") << "the deployment pins the candidate now";
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  // Each canary step's window: from its event to the next one.
  const json& history = d["rollout"]["history"];
  std::map<int, std::pair<double, double>> windows;
  for (std::size_t i = 0; i < history.size(); ++i) {
    if (history[i]["state"] != "canary") continue;
    const double end = i + 1 < history.size() ? history[i + 1]["at"].get<double>() : 1e18;
    windows[history[i]["weight"].get<int>()] = {history[i]["at"].get<double>(), end};
  }
  ASSERT_EQ(windows.size(), 3u) << history.dump(2);
  for (const auto& [weight, window] : windows) {
    int candidate = 0, total = 0;
    std::map<std::string, std::string> variant_of;
    for (const auto& a : load.answers()) {
      if (a.at < window.first + 0.2 || a.at > window.second - 0.2) continue;  // the split changes within 1 s
      ++total;
      candidate += a.variant == "candidate" ? 1 : 0;
      auto [it, added] = variant_of.emplace(a.key, a.variant);
      EXPECT_EQ(it->second, a.variant) << "key " << a.key << " switched variants within step " << weight;
    }
    ASSERT_GT(total, 20) << "too few requests in step " << weight;
    const double share = 100.0 * candidate / total;
    std::cout << "step " << weight << "%: " << total << " requests, " << share << "% by the candidate\n";
    EXPECT_NEAR(share, weight, 10.0) << "step " << weight;
  }
}

// Issue 39: a candidate that fails a live gate (a p99 it cannot meet) is rolled back from its
// first canary step with the gate's figure in the reason; the stable serves everything again.
TEST_F(RolloutTest, ALiveGateThatFailsRollsBackFromACanaryStep) {
  start_trainer(2);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 10s));
  train("base", 2000, 1, 1);
  train("slowish", 2000, 1, 2);
  put_deployment("strict", "base");
  NameLoad load(controller_port_, "strict", examples(1), 100);
  const json spec = {{"model_id", "slowish"},
                     {"shadow_seconds", 0},
                     {"steps", {50, 100}},
                     {"step_seconds", 2},
                     {"min_requests", 5},
                     {"eval_idxs", {0, 500}},
                     {"gates", {{"max_accuracy_drop", 0.2}, {"max_class_recall_drop", 1}, {"max_p99_ms", 0.001}}}};
  ASSERT_EQ(post("/deployments/strict/rollout", spec.dump()).first, 202);
  ASSERT_TRUE(eventually([&] { return ended("strict"); }, 120s)) << deployment("strict").dump(2);
  load.stop();
  const json d = deployment("strict");
  std::cout << "rolled back live: " << d["rollout"]["reason"] << "\n";
  EXPECT_EQ(d["rollout"]["state"], "rolled_back");
  EXPECT_NE(d["rollout"]["reason"].get<std::string>().find("step 1: p99_ms"), std::string::npos) << d.dump(2);
  EXPECT_EQ(d["stable"]["model_id"], "base");
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  const std::string metrics = client_->Get("/metrics")->body;
  EXPECT_NE(metrics.find("mlswarm_rollbacks_total{reason=\"p99_ms\"} 1"), std::string::npos) << metrics;
}

// Issue 39: a job or a sweep that carries "deploy" goes live through the gate when it ends, not
// by itself: the first onto a new name is put there, the next is rolled out onto it (and
// promoted through its one step), and a sweep's best model likewise.
TEST_F(RolloutTest, JobsAndSweepsThatCarryDeployAreRolledOutOntoTheirName) {
  start_trainer(2);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 10s));
  const json gate = {{"name", "auto"},
                     {"eval_idxs", {0, 300}},
                     {"shadow_seconds", 0},
                     {"steps", {100}},
                     {"step_seconds", 1},
                     {"min_requests", 0},
                     {"gates", {{"max_accuracy_drop", 1}, {"max_class_recall_drop", 1}, {"min_agreement", 0}}}};
  auto job = [&](const std::string& id, const json& deploy) {
    return json{{"model_id", id},
                {"example_idxs", {0, 600}},
                {"test_idxs", {0, 300}},
                {"train_opts", {{"epochs", 1}, {"batch_size", 64}}},
                {"deploy", deploy}};
  };
  json bad = job("auto-x", {{"name", "auto"}, {"steps", {50, 20}}});
  EXPECT_EQ(post("/train", bad.dump()).first, 400) << "the rollout fields are checked at submit";
  ASSERT_EQ(post("/train", job("auto-a", {{"name", "auto"}}).dump()).first, 202);
  ASSERT_TRUE(serves("auto", "auto-a", 300s)) << deployment("auto").dump(2);
  EXPECT_FALSE(deployment("auto")["rollout"].is_object()) << "a new name is put, with nothing to judge against";
  ASSERT_EQ(post("/train", job("auto-b", gate).dump()).first, 202);
  ASSERT_TRUE(serves("auto", "auto-b", 300s)) << deployment("auto").dump(2);
  EXPECT_EQ(deployment("auto")["rollout"]["state"], "promoted");
  EXPECT_EQ(deployment("auto")["rollout"]["spec"]["model_id"], "auto-b");
  const json sweep = {{"sweep_id", "autosw"},
                      {"trials", 2},
                      {"seed", 1},
                      {"base",
                       {{"dataset", "fashion-mnist"},
                        {"example_idxs", {0, 600}},
                        {"test_idxs", {0, 300}},
                        {"train_opts", {{"batch_size", 64}}}}},
                      {"space", {{"lr", {{"type", "log_uniform"}, {"min", 0.01}, {"max", 0.1}}}}},
                      {"scheduler", {{"type", "random"}, {"epochs", 1}}},
                      {"deploy", gate}};
  ASSERT_EQ(post("/sweeps", sweep.dump()).first, 202);
  ASSERT_TRUE(serves("auto", "autosw", 300s)) << deployment("auto").dump(2) << get("/sweeps/autosw").dump(2);
  EXPECT_EQ(deployment("auto")["rollout"]["state"], "promoted");
  // Each end deployed once: one rollout per deploy in the history of rollouts.
  const std::string metrics = client_->Get("/metrics")->body;
  EXPECT_NE(metrics.find("mlswarm_rollouts_total{outcome=\"promoted\"} 2"), std::string::npos) << metrics;
}

// Issue 39: the leader killed mid-rollout; the follower carries it on from the journal, no step
// repeated or skipped. Every request goes to the follower: the leader, which gets none, can pass
// the shadow phase's gates (min_requests) only by summing the follower's figures, and the
// follower serves each split the leader decides.
TEST_F(RolloutTest, ALeaderKilledMidRolloutIsCarriedOnByTheFollower) {
  start_trainer(2);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 10s));
  train("one", 2000, 1, 1);
  train("two", 2000, 1, 2);
  put_deployment("ha", "one");
  start_follower();
  // A version a deployment pins is loaded and warmed on every replica as soon as its journal
  // shows it, not on the replica's first request for it: the follower gets none here.
  auto loaded_on_follower = [&] {
    auto res = other_->Get("/metrics");
    if (!res || res->status != 200) return -1.0;
    const std::size_t at = res->body.find("\nmlswarm_serve_loaded_versions ");
    return at == std::string::npos ? -1.0 : std::stod(res->body.substr(at + 31));
  };
  ASSERT_TRUE(eventually([&] { return loaded_on_follower() == 1; }, 30s)) << "model one, preloaded at start";
  put_deployment("warm", "two");
  EXPECT_TRUE(eventually([&] { return loaded_on_follower() == 2; }, 10s)) << loaded_on_follower();
  NameLoad load(controller_port_, "ha", examples(1), 200, "127.0.0.11");
  const json spec = {{"model_id", "two"},
                     {"shadow_seconds", 1},
                     {"steps", {25, 50, 100}},
                     {"step_seconds", 3},
                     {"min_requests", 10},
                     {"eval_idxs", {0, 500}},
                     {"gates", {{"max_accuracy_drop", 0.2}, {"max_class_recall_drop", 1}, {"min_agreement", 0.5}}}};
  ASSERT_EQ(post("/deployments/ha/rollout", spec.dump()).first, 202);
  ASSERT_TRUE(eventually([&] { return rollout_state("ha") == "canary"; }, 120s)) << deployment("ha").dump(2);
  const json at_canary = deployment("ha");
  controller_->signal(SIGKILL);
  ASSERT_TRUE(controller_->wait_exit(10s));
  const json d = ended_on_follower("ha");
  load.stop();
  EXPECT_EQ(d["rollout"]["state"], "promoted") << d.dump(2);
  EXPECT_EQ(load.failed(), 0) << load.first_failure();
  std::map<int, int> steps;
  for (const auto& e : d["rollout"]["history"]) {
    if (e["state"] == "canary") ++steps[e["weight"].get<int>()];
  }
  EXPECT_EQ(steps, (std::map<int, int>{{25, 1}, {50, 1}, {100, 1}})) << d["rollout"]["history"].dump(2);
  // The shadow phase's gates were judged on the follower's figures by the leader.
  const json& shadow_end = at_canary["rollout"]["history"].back();
  EXPECT_EQ(shadow_end["state"], "canary") << at_canary.dump(2);
  std::cout << "the leader left the shadow phase on the follower's figures: " << shadow_end["reason"] << "\n";
  expect_served_the_split(load, shadow_end["at"].get<double>());
}

}  // namespace
}  // namespace mlswarm
