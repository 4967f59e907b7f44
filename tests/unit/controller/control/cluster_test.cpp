// The executor (Cluster) against fake trainers (a TrainerTransport in memory): what it sends to
// trainers and what it records, in the orders a real network produces.

#include "cluster.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <vector>

#include "../../../support/temp_dir.h"
#include "../../../support/wait.h"
#include "mlswarm/attempt_fence.h"
#include "mlswarm/model_meta.h"

namespace mlswarm {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::eventually;
using testing::TempDir;

/// Trainers that live in memory: they take what they are sent (unless told to refuse), report
/// it running, and record every call. A dispatch can be held until the test releases it.
class FakeTrainers final : public TrainerTransport {
 public:
  struct Call {
    std::string method;  ///< POST (a dispatch) or DELETE (a cancel)
    std::string address;
    std::string job_id;
    int attempt = 0;
  };

  HttpCallResult status(const std::string& address) override {
    std::lock_guard lock(mutex_);
    json jobs = json::array();
    int running = 0;
    for (const auto& [id, job] : jobs_[address]) {
      running += job.second == "running" ? 1 : 0;
      json reported{{"job_id", id},
                    {"model_id", id},
                    {"state", job.second},
                    {"attempts", job.first},
                    {"spec", {{"job_id", id}, {"model_id", id}}}};
      if (job.second == "succeeded") reported.update({{"epoch", 3}, {"epochs", 3}, {"accuracy", 0.875}});
      jobs.push_back(std::move(reported));
    }
    const json trainer{{"address", address}, {"capacity", 4}, {"running", running}, {"queued", 0}, {"draining", false}};
    return {200, json{{"trainer", trainer}, {"jobs", jobs}}.dump(), ""};
  }

  HttpCallResult dispatch(const std::string& address, const json& spec, const std::string&) override {
    std::unique_lock lock(mutex_);
    const std::string id = spec.value("job_id", "");
    const int attempt = spec.value("attempt", 0);
    calls_.push_back({"POST", address, id, attempt});
    changed_.notify_all();
    changed_.wait(lock, [&] { return !hold_; });
    if (refuse_.contains(address)) return {500, R"({"error": {"code": "internal", "message": "refused"}})", ""};
    jobs_[address][id] = {attempt, "running"};
    return {202, json{{"job_id", id}, {"state", "queued"}}.dump(), ""};
  }

  HttpCallResult cancel(const std::string& address, const std::string& job_id, int attempt) override {
    std::lock_guard lock(mutex_);
    calls_.push_back({"DELETE", address, job_id, attempt});
    auto& jobs = jobs_[address];
    if (auto it = jobs.find(job_id); it != jobs.end() && it->second.first == attempt) it->second.second = "cancelled";
    return {200, "{}", ""};
  }

  void hold(bool on) {
    std::lock_guard lock(mutex_);
    hold_ = on;
    changed_.notify_all();
  }
  /// What `address` reports of `id` from now on (a trainer that ran an attempt to its end).
  void set(const std::string& address, const std::string& id, int attempt, const std::string& state) {
    std::lock_guard lock(mutex_);
    jobs_[address][id] = {attempt, state};
  }
  void refuse(const std::string& address) {
    std::lock_guard lock(mutex_);
    refuse_.insert({address, true});
  }
  std::vector<Call> calls(const std::string& method) const {
    std::lock_guard lock(mutex_);
    std::vector<Call> out;
    for (const auto& c : calls_) {
      if (c.method == method) out.push_back(c);
    }
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool hold_ = false;
  std::map<std::string, bool> refuse_;
  std::map<std::string, std::map<std::string, std::pair<int, std::string>>> jobs_;  ///< attempt, state
  std::vector<Call> calls_;
};

class ClusterExecutor : public ::testing::Test {
 protected:
  void start(std::vector<std::string> trainers, std::function<bool()> may_act = {}) {
    ClusterOptions o;
    o.discover = [trainers] {
      std::vector<DiscoveredTrainer> found;
      for (const auto& t : trainers) found.push_back({t, true});
      return found;
    };
    o.scan_interval = 20ms;
    o.poll_interval = 20ms;
    o.home_dir = home_.path();
    o.may_act = std::move(may_act);
    cluster_ = std::make_unique<Cluster>(registry_, fake_, o);
    cluster_->start();
    ASSERT_TRUE(eventually([&] { return cluster_->trainers().size() == trainers.size(); }, 5s));
  }
  JobRecord submit(const std::string& id, int trainers = 1) {
    JobSpec spec;
    spec.job_id = id;
    spec.model_id = id;
    spec.trainers = trainers;
    spec.min_trainers = trainers;
    return cluster_->submit(spec);
  }
  std::optional<JobRecord> job(const std::string& id) const { return registry_.find(id); }
  void TearDown() override {
    fake_.hold(false);
    if (cluster_) cluster_->stop();
  }

  TempDir home_;
  JobRegistry registry_{home_ / "controller"};
  FakeTrainers fake_;
  std::unique_ptr<Cluster> cluster_;
};

TEST_F(ClusterExecutor, ACancelWhileTheDispatchIsInFlightStaysCancelledAndTheTrainerIsToldToStop) {
  start({"10.0.0.2:48516"});
  fake_.hold(true);
  submit("j");
  ASSERT_TRUE(eventually([&] { return fake_.calls("POST").size() == 1; }, 5s));
  cluster_->cancel("j");
  fake_.hold(false);  // the trainer takes it, after the cancel
  ASSERT_TRUE(eventually([&] { return fake_.calls("DELETE").size() >= 1; }, 5s));
  const auto stop = fake_.calls("DELETE").front();
  EXPECT_EQ(stop.address, "10.0.0.2:48516");
  EXPECT_EQ(stop.attempt, fake_.calls("POST").front().attempt);
  EXPECT_FALSE(eventually([&] { return job("j")->state != JobState::kCancelled; }, 300ms))
      << to_string(job("j")->state);
  EXPECT_EQ(fake_.calls("POST").size(), 1u) << "a cancelled job was dispatched again";
}

TEST_F(ClusterExecutor, RanksThatTookADataParallelJobAreToldToStopWhenOneRefuses) {
  start({"10.0.0.2:48516", "10.0.0.3:48516"});
  fake_.refuse("10.0.0.3:48516");
  submit("dp", 2);
  ASSERT_TRUE(eventually([&] { return fake_.calls("POST").size() >= 2; }, 5s));
  ASSERT_TRUE(eventually([&] { return !fake_.calls("DELETE").empty(); }, 5s));
  const auto posts = fake_.calls("POST");
  const auto stops = fake_.calls("DELETE");
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].job_id, "dp");
  EXPECT_EQ(stops[0].attempt, posts[0].attempt);
  EXPECT_NE(stops[0].address, "10.0.0.3:48516") << "the rank that refused took nothing to stop";
  ASSERT_TRUE(eventually([&] { return job("dp")->state == JobState::kQueued && !job("dp")->error.empty(); }, 5s));
  EXPECT_NE(job("dp")->error.find("10.0.0.3:48516"), std::string::npos) << job("dp")->error;
  bool suspect = false;
  for (const auto& t : cluster_->trainers()) suspect |= t.address == "10.0.0.3:48516" && t.suspect;
  EXPECT_TRUE(suspect) << "the trainer that refused gets no dispatches for a while";
}

TEST_F(ClusterExecutor, AnAttemptIsNeverNumberedBelowTheJobsFence) {
  AttemptFence(job_dir(home_.path(), "fenced"), 7).claim();  // a trainer recorded attempt 7
  start({"10.0.0.2:48516"});
  submit("fenced");
  ASSERT_TRUE(eventually([&] { return fake_.calls("POST").size() == 1; }, 5s));
  EXPECT_EQ(fake_.calls("POST").front().attempt, 8);
  ASSERT_TRUE(eventually([&] { return job("fenced")->state == JobState::kRunning; }, 5s));
  EXPECT_EQ(job("fenced")->spec.attempt, 8);
}

TEST_F(ClusterExecutor, ALeaseLostAfterTheAttemptIsJournaledSendsNothingAndTheNextLeaderNumbersAfresh) {
  std::atomic<bool> trap{true};
  std::atomic<bool> lost{false};
  // The lease is lost at the worst moment: the attempt is numbered and journaled, nothing sent.
  start({"10.0.0.2:48516"}, [&] {
    if (trap) {
      auto j = registry_.find("j");
      if (j && j->state == JobState::kQueued && j->spec.attempt >= 1) lost = true;
    }
    return !lost.load();
  });
  submit("j");
  ASSERT_TRUE(eventually([&] { return lost.load(); }, 5s));
  EXPECT_FALSE(eventually([&] { return !fake_.calls("POST").empty(); }, 500ms))
      << "a controller without the lease called a trainer";
  EXPECT_EQ(job("j")->spec.attempt, 1);
  trap = false;
  lost = false;  // the lease again (or the next leader, from the same journal)
  ASSERT_TRUE(eventually([&] { return fake_.calls("POST").size() == 1; }, 5s));
  EXPECT_EQ(fake_.calls("POST").front().attempt, 2) << "attempt 1 may have reached a trainer; it is never reused";
}

// Issue 38: the leader was killed after its dispatch reached the trainer and before it
// recorded the trainer's answer; the attempt ran to its end, and the next leader, finding the
// job queued, dispatched attempt 2, which adopted attempt 1's model and succeeded a second time
// with the figures of an attempt that trained nothing. The crash is injected at that point: the
// attempt is journaled and nothing more is recorded; the trainer then reports it succeeded. The
// next controller ends the job with that attempt's own report and dispatches nothing.
TEST_F(ClusterExecutor, AnAttemptThatEndedUnrecordedIsTheJobsEndNotAReasonToRunItAgain) {
  std::atomic<bool> crashed{false};
  start({"10.0.0.2:48516"}, [&] {
    auto j = registry_.find("j");
    if (j && j->state == JobState::kQueued && j->spec.attempt >= 1) crashed = true;
    return !crashed.load();
  });
  submit("j");
  ASSERT_TRUE(eventually([&] { return crashed.load(); }, 5s));
  cluster_->stop();  // the leader dies here: attempt 1 journaled, its dispatch's answer never recorded
  ASSERT_EQ(job("j")->state, JobState::kQueued);
  ASSERT_EQ(job("j")->spec.attempt, 1);
  // Meanwhile the dispatch had reached the trainer, and attempt 1 ran to its end.
  fake_.set("10.0.0.2:48516", "j", 1, "succeeded");
  const auto model = model_dir(home_.path(), "j");
  std::filesystem::create_directories(model);
  testing::write_text(model / "model.pt", "weights");
  testing::write_text(model / "meta.json", json{{"job_id", "j"}, {"attempt", 1}}.dump());

  start({"10.0.0.2:48516"});  // the next leader, from the same journal
  ASSERT_TRUE(eventually([&] { return job("j")->state == JobState::kSucceeded; }, 5s))
      << to_string(job("j")->state) << " " << job("j")->error;
  EXPECT_TRUE(fake_.calls("POST").empty())
      << "attempt " << fake_.calls("POST").front().attempt << " was dispatched for work already done";
  EXPECT_EQ(job("j")->spec.attempt, 1);
  EXPECT_EQ(job("j")->progress.epoch, 3) << "the figures are the attempt's own report";
  EXPECT_EQ(job("j")->progress.accuracy.value_or(0), 0.875);
}

}  // namespace
}  // namespace mlswarm
