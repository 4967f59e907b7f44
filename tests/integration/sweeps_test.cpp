// Sweeps on a real controller and real trainers: ASHA to its end on two trainers, and a
// leader killed in the middle of one.

#include <csignal>
#include <fstream>
#include <map>
#include <set>

#include "cluster_fixture.h"

namespace mlswarm {
namespace {

/// Nine trials of learning rate and label smoothing over rungs of 1, 3 and 9 epochs, each on
/// 600 training images (evaluated on 500), on the design's shape.
json nine_trials(const std::string& id) {
  return {{"sweep_id", id},
          {"trials", 9},
          {"seed", 1},
          {"base",
           {{"model_type", "convnet"},
            {"dataset", "fashion-mnist"},
            {"example_idxs", {0, 600}},
            {"test_idxs", {0, 500}},
            {"train_opts", {{"batch_size", 64}}}}},
          {"space",
           {{"lr", {{"type", "log_uniform"}, {"min", 0.003}, {"max", 0.3}}},
            {"label_smoothing", {{"type", "choice"}, {"values", {0, 0.1}}}}}},
          {"scheduler", {{"type", "asha"}, {"r", 1}, {"eta", 3}, {"R", 9}}}};
}

class SweepTest : public ClusterTest {
 protected:
  json sweep(const std::string& id) { return get("/sweeps/" + id); }
  bool ended(const std::string& id) {
    const std::string state = sweep(id).value("state", "");
    return !state.empty() && state != "running";
  }
  /// How many times the trainers' logs say job `id` succeeded.
  std::size_t successes(const std::string& id, const std::string& model_id) {
    std::string logs;
    for (auto& [i, t] : trainers_) logs += t->log();
    const std::string line = "job " + id + " model " + model_id + ": succeeded";
    std::size_t n = 0;
    for (auto at = logs.find(line); at != std::string::npos; at = logs.find(line, at + 1)) ++n;
    return n;
  }
  /// The sweep's decisions as journaled: a record each ("sweep-decision", id "<sweep>#<n>"),
  /// in order of n (the last line of each wins, as on replay).
  json decisions(const std::string& id) {
    std::map<int, json> by_number;
    std::ifstream in(home_ / "controller" / "jobs.jsonl");
    std::string line;
    const std::string prefix = id + "#";
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (!j.is_object() || j.value("document", "") != "sweep-decision") continue;
      const std::string key = j.value("id", "");
      if (key.rfind(prefix, 0) == 0) by_number[std::stoi(key.substr(prefix.size()))] = j["body"];
    }
    json out = json::array();
    for (auto& [n, d] : by_number) out.push_back(std::move(d));
    return out;
  }
  /// What a finished sweep must show: every trial's jobs succeeded once each, each a rung
  /// further than the one before, no decision twice, the best trial's model served as the sweep.
  void expect_each_trial_ran_once(const json& s) {
    const std::string id = s["sweep_id"];
    std::size_t jobs = 0;
    for (const auto& t : s["trials"]) {
      const int rung = t["rung"];
      ASSERT_EQ(t["jobs"].size(), static_cast<std::size_t>(rung + 1)) << t.dump();
      for (const auto& job_id : t["jobs"]) {
        const json j = job(job_id);
        EXPECT_EQ(j["state"], "succeeded") << j.dump();
        EXPECT_EQ(successes(job_id, t["model_id"]), 1u) << job_id << " trained to its end exactly once";
        ++jobs;
      }
      EXPECT_EQ(t["epochs"], std::vector<int>({1, 3, 9})[static_cast<std::size_t>(rung)]);
    }
    EXPECT_EQ(get("/jobs")["jobs"].size(), jobs) << "no job but the trials'";
    std::set<std::string> seen;
    for (const auto& d : decisions(id)) EXPECT_TRUE(seen.insert(d.dump()).second) << "twice: " << d.dump();
  }
  void expect_the_best_is_served(const json& s) {
    const std::string id = s["sweep_id"];
    ASSERT_TRUE(s["best"].is_object()) << s.dump(2);
    EXPECT_EQ(s["best"]["published_as"], id);
    EXPECT_EQ(s["leaderboard"][0], s["best"]["trial"]);
    EXPECT_EQ(s["best"]["epochs"], 9);
    const json model = get("/models/" + id);
    EXPECT_EQ(model["model_id"], id) << model.dump();
    EXPECT_EQ(model["job_id"], s["best"]["jobs"].back()) << "the best trial's last rung's weights";
    const json examples = get("/datasets/fashion-mnist/examples?count=2");
    auto [status, body] = post("/predict", json{{"model_id", id}, {"examples", examples["examples"]}}.dump());
    EXPECT_EQ(status, 200) << body.dump();
  }
};

TEST_F(SweepTest, ANineTrialAshaSweepOnTwoTrainersRunsToItsEndAndServesTheBest) {
  for (int i : {2, 3}) start_trainer(i);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 2; }, 10s));
  json bad = nine_trials("bad");
  bad["space"]["lr"]["min"] = -1;
  auto [refused, why] = post("/sweeps", bad.dump());
  EXPECT_EQ(refused, 400) << why.dump();
  EXPECT_EQ(why["error"].value("field", ""), "space.lr.min") << why.dump();
  EXPECT_EQ(get("/sweeps")["sweeps"].size(), 0u) << "a bad spec changes nothing";

  const auto started = std::chrono::steady_clock::now();
  auto [status, accepted] = post("/sweeps", nine_trials("asha9").dump());
  ASSERT_EQ(status, 202) << accepted.dump();
  EXPECT_EQ(post("/sweeps", nine_trials("asha9").dump()).first, 409);
  ASSERT_TRUE(eventually([&] { return ended("asha9"); }, 300s)) << sweep("asha9").dump(2);
  const json s = sweep("asha9");
  std::cout << "asha9: " << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() << " s, "
            << s["trainer_seconds"] << " trainer-seconds, best trial " << s["best"]["trial"] << " accuracy "
            << s["best"]["accuracy"] << "\n";
  ASSERT_EQ(s["state"], "succeeded") << s.dump(2);
  ASSERT_NO_FATAL_FAILURE(expect_each_trial_ran_once(s));
  ASSERT_NO_FATAL_FAILURE(expect_the_best_is_served(s));
  const std::string logs = trainers_[2]->log() + trainers_[3]->log();
  EXPECT_NE(logs.find("carrying on from job asha9-t"), std::string::npos) << "a promotion resumes its checkpoint";
  EXPECT_EQ(get("/sweeps")["sweeps"][0]["state"], "succeeded");
  const auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("mlswarm_sweeps{state=\"succeeded\"} 1"), std::string::npos) << metrics->body;
  EXPECT_EQ(client_->Delete("/sweeps/asha9")->status, 409) << "it has ended";
  EXPECT_EQ(client_->Delete("/sweeps/nope")->status, 404);
}

// The controller SIGKILLed while trials run and decisions are being taken; a new one on the
// same HOME_DIR carries the sweep to the same kind of end: no trial lost, none run twice.
TEST_F(SweepTest, ALeaderKilledMidSweepResumesItExactlyOnce) {
  for (int i : {2, 3}) start_trainer(i);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 2; }, 10s));
  ASSERT_EQ(post("/sweeps", nine_trials("resumed").dump()).first, 202);
  ASSERT_TRUE(eventually([&] { return sweep("resumed").value("decisions", 0) >= 5; }, 120s));
  const json before = sweep("resumed");
  controller_->signal(SIGKILL);
  ASSERT_TRUE(controller_->wait_exit(10s));
  start_controller();
  EXPECT_GE(sweep("resumed")["decisions"], before["decisions"]) << "the journal kept every decision";
  ASSERT_TRUE(eventually([&] { return ended("resumed"); }, 300s)) << sweep("resumed").dump(2);
  const json s = sweep("resumed");
  std::cout << "resumed: killed after " << before["decisions"] << " decisions; " << s["decisions"]
            << " in all, best trial " << s["best"]["trial"] << "\n";
  ASSERT_EQ(s["state"], "succeeded") << s.dump(2);
  ASSERT_NO_FATAL_FAILURE(expect_each_trial_ran_once(s));
  ASSERT_NO_FATAL_FAILURE(expect_the_best_is_served(s));
}

// A sweep created through a follower (forwarded to the leader); the leader SIGKILLed mid-sweep;
// the follower takes over and carries it to its end from the journal.
TEST_F(SweepTest, AFailoverMidSweepCarriesItOnExactlyOnce) {
  for (int i : {2, 3}) start_trainer(i);
  start_controller({"--drain-ms", "500"});
  start_follower();
  auto role = [&](httplib::Client& c) {
    return testing::get_json(c, "/status").value("controller", json::object()).value("role", "");
  };
  ASSERT_TRUE(eventually([&] { return role(*client_) == "leader" && role(*other_) == "follower"; }, 10s));
  ASSERT_TRUE(eventually([&] { return trainer_count() == 2; }, 10s));
  auto [status, accepted] = testing::post_json(*other_, "/sweeps", nine_trials("failover").dump());
  ASSERT_EQ(status, 202) << accepted.dump();
  ASSERT_TRUE(eventually([&] { return sweep("failover").value("decisions", 0) >= 5; }, 120s));
  controller_->signal(SIGKILL);
  ASSERT_TRUE(controller_->wait_exit(10s));
  ASSERT_TRUE(eventually([&] { return role(*other_) == "leader"; }, 10s));
  client_ = std::make_unique<httplib::Client>("127.0.0.11", controller_port_);  // the new leader, for the checks
  client_->set_read_timeout(30s);
  ASSERT_TRUE(eventually([&] { return ended("failover"); }, 300s)) << sweep("failover").dump(2);
  const json s = sweep("failover");
  ASSERT_EQ(s["state"], "succeeded") << s.dump(2);
  ASSERT_NO_FATAL_FAILURE(expect_each_trial_ran_once(s));
  ASSERT_NO_FATAL_FAILURE(expect_the_best_is_served(s));
}

// Issue 38: ids collided across sweeps, their trials and jobs. POST /train of an id a sweep owns
// (its own, a trial's model or a rung's job) is a 409 naming the sweep; live sweeps and trials
// per sweep have caps. No trainer is needed: nothing here trains.
TEST_F(SweepTest, JobsAndSweepsShareOneNamespaceAndSweepsHaveCaps) {
  start_controller({"--max-live-sweeps", "2", "--max-sweep-trials", "9"});
  auto [created, body] = post("/sweeps", nine_trials("coly").dump());
  ASSERT_EQ(created, 202) << body.dump();
  for (const auto& [id, model] : {std::pair<std::string, std::string>{"coly-t0", "mine"},
                                  {"mine", "coly-t4"},
                                  {"coly-t2-r1", "mine"},
                                  {"coly", "mine"}}) {
    auto [status, refused] = post("/train", json{{"job_id", id}, {"model_id", model}}.dump());
    EXPECT_EQ(status, 409) << id << " " << model << ": " << refused.dump();
    EXPECT_NE(refused.dump().find("sweep 'coly'"), std::string::npos) << refused.dump();
  }
  auto [trial_named, clash] = post("/sweeps", nine_trials("coly-t1").dump());
  EXPECT_EQ(trial_named, 409) << clash.dump();
  auto [ok, job] = post("/train", json{{"job_id", "coly-t9"}, {"model_id", "coly-t9"}}.dump());
  EXPECT_EQ(ok, 202) << "coly has no trial 9: " << job.dump();
  auto [second, second_body] = post("/sweeps", nine_trials("other").dump());
  EXPECT_EQ(second, 202) << second_body.dump();
  auto [third, third_body] = post("/sweeps", nine_trials("third").dump());
  EXPECT_EQ(third, 429) << third_body.dump();
  json wide = nine_trials("wide");
  wide["trials"] = 27;
  EXPECT_EQ(post("/sweeps", wide.dump()).first, 400);
}

}  // namespace
}  // namespace mlswarm
