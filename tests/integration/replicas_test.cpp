// Controller replicas sharing HOME_DIR on loopback: the follower takes over when the leader
// dies, re-attaches its running jobs, and a leader paused past a takeover writes nothing and
// dispatches nothing when it wakes.

#include <signal.h>

#include "cluster_fixture.h"

namespace mlswarm {
namespace {

class ReplicaTest : public ClusterTest {
 protected:
  json role_of(httplib::Client& c) { return testing::get_json(c, "/status").value("controller", json::object()); }
  void TearDown() override {
    if (follower_ && follower_->pid() > 0) ::kill(follower_->pid(), SIGCONT);
    if (controller_ && controller_->pid() > 0) ::kill(controller_->pid(), SIGCONT);
    ClusterTest::TearDown();
  }
  /// A write to the follower goes to the leader: the job "failover", `id` its job id.
  void submit_through_the_follower(std::string& id) {
    auto res = other_->Post("/train",
                            json{{"model_id", "failover"},
                                 {"example_idxs", {0, 3000}},
                                 {"test_idxs", {0, kTestImages}},
                                 {"train_opts", {{"epochs", 3}, {"batch_size", 64}}}}
                                .dump(),
                            "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 202) << res->body;
    EXPECT_EQ(res->get_header_value("X-Forwarded-To"), "127.0.0.1:" + std::to_string(controller_port_));
    id = json::parse(res->body)["job_id"];
  }
  /// A write that a replica already forwarded here as to the leader is not sent on: one hop.
  void expect_a_forwarded_write_is_not_sent_on() {
    auto hop = other_->Post("/train", {{"X-Mlswarm-Forwarded-By", "127.0.0.99:48515"}},
                            json{{"model_id", "bounced"}}.dump(), "application/json");
    ASSERT_TRUE(hop);
    EXPECT_EQ(hop->status, 503) << hop->body;
    EXPECT_NE(hop->body.find("the lead is changing"), std::string::npos) << hop->body;
  }
  /// How many times the trainers' logs say job `id` (model failover) succeeded.
  std::size_t successes_in_trainer_logs(const std::string& id) {
    std::string trainer_logs;
    for (auto& [i, t] : trainers_) trainer_logs += t->log();
    std::size_t runs = 0;
    for (std::size_t at = trainer_logs.find("job " + id + " model failover: succeeded"); at != std::string::npos;
         at = trainer_logs.find("job " + id + " model failover: succeeded", at + 1)) {
      ++runs;
    }
    return runs;
  }
};

/// The journal's records as (term, job id, state), in file order.
std::vector<std::tuple<std::uint64_t, std::string, std::string>> journal(const TempDir& home) {
  std::vector<std::tuple<std::uint64_t, std::string, std::string>> out;
  std::ifstream in(home / "controller" / "jobs.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object()) out.emplace_back(j.value("term", 0ULL), j.value("job_id", ""), j.value("state", ""));
  }
  return out;
}

TEST_F(ReplicaTest, TheFollowerTakesOverWithinSecondsAndReattachesTheRunningJob) {
  for (int i : {2, 3}) start_trainer(i);
  start_controller({"--drain-ms", "500"});
  ASSERT_TRUE(eventually([&] { return role_of(*client_).value("role", "") == "leader"; }, 10s));
  start_follower();
  ASSERT_TRUE(eventually([&] { return role_of(*other_).value("role", "") == "follower"; }, 10s));
  EXPECT_EQ(role_of(*other_)["leader"], "127.0.0.1:" + std::to_string(controller_port_));
  ASSERT_TRUE(eventually([&] { return trainer_count() == 2; }, 10s));

  // A write to the follower goes to the leader.
  std::string id;
  ASSERT_NO_FATAL_FAILURE(submit_through_the_follower(id));
  // A write that a replica already forwarded here as to the leader is not sent on: one hop.
  ASSERT_NO_FATAL_FAILURE(expect_a_forwarded_write_is_not_sent_on());
  ASSERT_TRUE(eventually([&] { return job(id).value("step", 0) > 0 && job(id).value("epoch", 0) >= 1; }, 60s));
  ASSERT_TRUE(eventually([&] { return testing::get_json(*other_, "/jobs/" + id).value("state", "") == "running"; }, 5s))
      << "the follower serves reads from the journal";

  const auto killed = std::chrono::steady_clock::now();
  controller_->signal(SIGKILL);
  ASSERT_TRUE(eventually([&] { return role_of(*other_).value("role", "") == "leader"; }, 10s));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::cout << "failover: the follower led " << seconds << " s after the leader was killed (term "
            << role_of(*other_)["term"] << ")\n";
  EXPECT_LT(seconds, 3.0);

  auto [status, second] = testing::post_json(
      *other_, "/train",
      json{{"model_id", "after-failover"}, {"example_idxs", {0, 1000}}, {"train_opts", {{"epochs", 1}}}}.dump());
  EXPECT_EQ(status, 202) << "the new leader takes jobs";
  auto state = [&](const std::string& job_id) {
    return testing::get_json(*other_, "/jobs/" + job_id).value("state", "");
  };
  ASSERT_TRUE(eventually([&] { return state(id) == "succeeded"; }, 180s)) << testing::get_json(*other_, "/jobs/" + id);
  const json done = testing::get_json(*other_, "/jobs/" + id);
  EXPECT_EQ(done["attempts"], 1) << "re-attached, not restarted";
  const json jobs = testing::get_json(*other_, "/jobs")["jobs"];
  ASSERT_EQ(jobs.size(), 2u) << "no job lost, none duplicated: " << jobs.dump();
  EXPECT_NE(jobs[0]["job_id"], jobs[1]["job_id"]);
  EXPECT_EQ(successes_in_trainer_logs(id), 1u) << "the job ran to completion exactly once";
}

// The paused leader wakes with a queued job in its memory and a free trainer in view: it must
// neither journal a dispatch nor send one, while the new leader runs that job.
TEST_F(ReplicaTest, ALeaderPausedPastATakeoverWritesAndDispatchesNothing) {
  start_controller({"--drain-ms", "500"});
  ASSERT_TRUE(eventually([&] { return role_of(*client_).value("role", "") == "leader"; }, 10s));
  const std::uint64_t first_term = role_of(*client_)["term"];
  start_follower();
  const std::string id = submit("waiting", 1000);  // no trainer yet: it waits, queued
  ASSERT_TRUE(eventually([&] { return testing::get_json(*other_, "/jobs/" + id).value("state", "") == "queued"; }, 5s));

  controller_->signal(SIGSTOP);
  ASSERT_TRUE(eventually([&] { return role_of(*other_).value("role", "") == "leader"; }, 10s)) << follower_->log();
  const std::uint64_t second_term = role_of(*other_)["term"];
  EXPECT_GT(second_term, first_term);
  for (int i : {2, 3}) start_trainer(i);  // both free: a stale dispatch would find one
  auto state = [&] { return testing::get_json(*other_, "/jobs/" + id).value("state", ""); };
  ASSERT_TRUE(eventually([&] { return state() == "running"; }, 20s)) << follower_->log();
  const std::string log_before_wake = controller_->log();
  controller_->signal(SIGCONT);
  ASSERT_TRUE(eventually([&] { return role_of(*client_).value("role", "") == "follower"; }, 10s))
      << "the woken leader steps down";
  ASSERT_TRUE(eventually([&] { return state() == "succeeded"; }, 120s)) << follower_->log();
  const std::string woken = controller_->log().substr(log_before_wake.size());
  EXPECT_EQ(woken.find("dispatched to"), std::string::npos) << "the paused leader dispatched after waking:\n" << woken;
  EXPECT_NE(woken.find("lost the lead"), std::string::npos) << woken;
  std::size_t copies = 0;
  for (auto& [i, t] : trainers_) copies += t->log().find("job " + id + " model waiting: queued") != std::string::npos;
  EXPECT_EQ(copies, 1u) << "the job reached one trainer only";
  bool newer_seen = false;
  for (const auto& [term, job_id, job_state] : journal(home_)) {
    if (term == second_term) newer_seen = true;
    EXPECT_FALSE(newer_seen && term < second_term) << "a record of term " << term << " after term " << second_term;
  }
  EXPECT_TRUE(newer_seen);
}

}  // namespace
}  // namespace mlswarm
