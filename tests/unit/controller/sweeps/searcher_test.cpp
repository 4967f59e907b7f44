// The searcher over a real job journal, with the cluster faked: submit records the job (as
// Cluster::submit does), a fake trainer finishes jobs with a known accuracy, and a "new
// leader" is a fresh registry and searcher over the same journal.

#include "searcher.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "../../../support/error_code.h"
#include "../../../support/temp_dir.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/model_meta.h"
#include "cluster.h"

namespace mlswarm {
namespace {

using nlohmann::json;
using testing::TempDir;

json nine_trials(const std::string& scheduler = R"({"type": "asha", "r": 1, "eta": 3, "R": 9})") {
  return json::parse(R"({"sweep_id": "s", "trials": 9, "seed": 3,
      "base": {"model_type": "convnet", "dataset": "fashion-mnist"},
      "space": {"lr": {"type": "log_uniform", "min": 0.001, "max": 0.3}},
      "scheduler": )" +
                     scheduler + "}");
}

/// How good trial t is: a fixed order over 0..8 (trial 7 best, trial 0 worst), the same at
/// every rung, plus a little per epoch trained.
double accuracy(int trial, int epochs) { return 0.5 + 0.04 * ((trial * 5) % 9) + 0.001 * epochs; }

/// How far the trials of a finished 1/3/9 sweep got.
struct Rungs {
  int at[3] = {0, 0, 0};  ///< trials whose last rung is 0, 1, 2
  int epochs = 0;         ///< the epochs they trained, 1, 3 or 9 each
  int promotions() const { return at[1] + 2 * at[2]; }
};
Rungs rungs_of(const json& sweep) {
  Rungs r;
  for (const auto& t : sweep["trials"]) {
    const int rung = t["rung"].get<int>();
    ++r.at[rung];
    r.epochs += std::vector<int>{1, 3, 9}[static_cast<std::size_t>(rung)];
  }
  return r;
}

class SearcherTest : public ::testing::Test {
 protected:
  SearcherTest() { lead(); }

  /// A new leader: the journal read afresh, a new searcher.
  void lead() {
    searcher_.reset();
    registry_ = std::make_unique<JobRegistry>(home_.path() / "controller");
    SearcherHooks hooks;
    hooks.submit = [this](JobSpec spec) {
      if (crash_next_submit_) {
        crash_next_submit_ = false;
        throw Error(ErrorCode::kInternal, "the leader died between the journal and the job");
      }
      ++created_[spec.job_id];
      registry_->create(std::move(spec), 1000);
    };
    hooks.cancel = [this](const std::string& id) {
      registry_->update(
          id, [](JobRecord& j) { j.state = JobState::kCancelled; }, true);
    };
    hooks.free_slots = [this] { return free_trainer_slots(trainers_, registry_->list()); };
    searcher_ = std::make_unique<SweepSearcher>(*registry_, home_.path(), hooks);
  }

  /// The fake trainer: the oldest queued job trains to its end (its rung's epochs), writing
  /// its model as a trainer would.
  bool finish_one() {
    for (const auto& job : registry_->list()) {
      if (is_terminal(job.state)) continue;
      const int epochs = last_epoch(job.spec);
      // A promoted trial trains on from where its last rung stopped.
      const int from = job.spec.resume_from.empty() ? 0 : last_epoch(registry_->find(job.spec.resume_from)->spec);
      ModelMeta meta;
      meta.model_id = job.spec.model_id;
      meta.job_id = job.spec.job_id;
      meta.dataset = job.spec.dataset;
      meta.version = epochs;
      meta.class_names = {"a", "b"};
      meta.mean = {0.5};
      meta.std = {0.25};
      if (write_models_) {
        write_file_atomic(model_dir(home_.path(), meta.model_id) / "model.pt", "weights of " + job.spec.job_id);
        write_file_atomic(model_dir(home_.path(), meta.model_id) / "meta.json", to_json(meta).dump());
      }
      registry_->update(
          job.spec.job_id,
          [&](JobRecord& j) {
            j.state = JobState::kSucceeded;
            j.progress.accuracy = accuracy(j.spec.trial, epochs);
            j.started_at = 100;
            j.finished_at = 100 + epochs - from;
          },
          true);
      return true;
    }
    return false;
  }

  json sweep() { return *searcher_->find("s"); }

  /// Runs the sweep to its end (bounded), `between` after every tick.
  void run(const std::function<void(int)>& between = {}) {
    for (int step = 0; step < 400 && sweep()["state"] == "running"; ++step) {
      searcher_->tick();
      finish_one();
      if (between) between(step);
    }
  }

  TempDir home_;
  std::unique_ptr<JobRegistry> registry_;
  std::unique_ptr<SweepSearcher> searcher_;
  std::vector<TrainerView> trainers_{{"10.0.0.1:7000", true, false, false, 1},
                                     {"10.0.0.2:7000", true, false, false, 1}};
  std::map<std::string, int> created_;
  bool crash_next_submit_ = false;
  bool write_models_ = true;
};

TEST_F(SearcherTest, ANineTrialAshaSweepOnTwoTrainersRunsToItsEndAndPublishesTheBest) {
  searcher_->create(parse_sweep_spec(nine_trials()));
  searcher_->tick();
  EXPECT_EQ(registry_->list().size(), 2u) << "as many trials at once as free trainer slots";
  run();
  const json s = sweep();
  ASSERT_EQ(s["state"], "succeeded") << s.dump(2);
  EXPECT_EQ(s["best"]["trial"], 7) << "the best trial climbs every rung";
  EXPECT_EQ(s["best"]["epochs"], 9);
  EXPECT_EQ(s["best"]["published_as"], "s");
  EXPECT_EQ(s["leaderboard"][0], 7);
  // Asynchronous: a trial is promoted as soon as it is in the top third of those that finished
  // its rung so far, so more than synchronous halving's 3 and 1 may climb; every trial at most once.
  const Rungs r = rungs_of(s);
  EXPECT_GE(r.at[2], 1);
  EXPECT_EQ(r.at[0] + r.at[1] + r.at[2], 9);
  EXPECT_EQ(registry_->list().size(), 9u + r.promotions());
  for (const auto& [id, n] : created_) EXPECT_EQ(n, 1) << id;
  EXPECT_EQ(s["trainer_seconds"], r.epochs) << "a promotion trains on, it does not start over";
  EXPECT_LT(r.epochs, 9 * 9 / 2) << "random search would train 81 epochs";
  // Promotions carry on from the rung before, on one model per trial.
  const auto top = registry_->find("s-t7-r2");
  ASSERT_TRUE(top);
  EXPECT_EQ(top->spec.resume_from, "s-t7-r1");
  EXPECT_EQ(top->spec.model_id, "s-t7");
  EXPECT_EQ(top->spec.train_opts.epochs, 9);
  EXPECT_EQ(read_file(model_dir(home_.path(), "s") / "model.pt", 1 << 20), "weights of s-t7-r2");
  EXPECT_EQ(read_file(model_version_dir(home_.path(), "s", 9) / "model.pt", 1 << 20), "weights of s-t7-r2")
      << "its version kept by number, to be pinned and served by a deployment";
  EXPECT_EQ(model_meta_from_json(json::parse(read_file(model_dir(home_.path(), "s") / "meta.json", 1 << 20))).model_id,
            "s");
  int stopped = 0;
  int completed = 0;
  for (const auto& t : s["trials"]) {
    stopped += t["state"] == "stopped" ? 1 : 0;
    completed += t["state"] == "completed" ? 1 : 0;
  }
  EXPECT_EQ(completed, r.at[2]);
  EXPECT_EQ(stopped, 9 - r.at[2]);
}

TEST_F(SearcherTest, RandomSearchTrainsEveryTrialToTheFullBudget) {
  searcher_->create(parse_sweep_spec(nine_trials(R"({"type": "random", "epochs": 2})")));
  run();
  const json s = sweep();
  ASSERT_EQ(s["state"], "succeeded");
  EXPECT_EQ(s["best"]["trial"], 7);
  EXPECT_EQ(registry_->list().size(), 9u);
  EXPECT_EQ(s["trainer_seconds"], 18);
  EXPECT_EQ(registry_->find("s-t0")->spec.stop_after_epoch, 0);
}

// A new leader after every tick, and a leader dying between journaling a decision and
// submitting its job: the sweep ends as it does without, every job created once, no decision twice.
TEST_F(SearcherTest, NewLeadersAndCrashesBetweenDecisionAndJobLoseAndRepeatNothing) {
  searcher_->create(parse_sweep_spec(nine_trials()));
  run([&](int step) {
    if (step % 3 == 1) crash_next_submit_ = true;
    lead();
  });
  const json s = sweep();
  ASSERT_EQ(s["state"], "succeeded") << s.dump(2);
  EXPECT_EQ(s["best"]["trial"], 7);
  const Rungs r = rungs_of(s);
  EXPECT_EQ(registry_->list().size(), 9u + r.promotions());
  for (const auto& [id, n] : created_) EXPECT_EQ(n, 1) << id;
  std::set<std::string> decisions;
  for (const auto& d : registry_->documents("sweep-decision")) {
    EXPECT_TRUE(decisions.insert(d.dump()).second) << d.dump();
  }
  EXPECT_EQ(s["decisions"], 9 + r.promotions() + (9 - r.at[2])) << "starts, promotions, stops";
  EXPECT_EQ(decisions.size(), s["decisions"].get<std::size_t>());
}

// Issue 38: each decision rewrote the whole sweep record, so the journal grew with the square of
// the decisions. A decision is a line of its own now: the journal grows by a line of a few dozen
// bytes a decision, and the sweep's own record is written only when its state changes.
TEST_F(SearcherTest, TheJournalGrowsWithDecisionsNotWithTheirSquare) {
  trainers_.push_back({"10.0.0.3:7000", true, false, false, 8});
  json body = nine_trials(R"({"type": "random", "epochs": 1})");
  body["trials"] = 200;
  searcher_->create(parse_sweep_spec(body));
  const auto journal = home_.path() / "controller" / "jobs.jsonl";
  for (int step = 0; step < 2000 && sweep()["state"] == "running"; ++step) {
    searcher_->tick();
    finish_one();
  }
  ASSERT_EQ(sweep()["state"], "succeeded");
  const std::size_t decisions = registry_->documents("sweep-decision").size();
  EXPECT_GE(decisions, 200u);
  std::size_t decision_bytes = 0;
  std::ifstream in(journal);
  std::string line;
  std::size_t record_lines = 0;
  while (std::getline(in, line)) {
    if (line.find("\"sweep-decision\"") != std::string::npos) decision_bytes += line.size() + 1;
    if (line.find("\"document\":\"sweep\"") != std::string::npos) ++record_lines;
  }
  EXPECT_LT(decision_bytes, decisions * 120) << "bytes for " << decisions << " decisions";
  EXPECT_LE(record_lines, 4u) << "the sweep's record written again per decision";
  std::cout << decisions << " decisions: " << decision_bytes << " bytes of journal, the sweep's record " << record_lines
            << " lines\n";
}

// Issue 38: ids collided across sweeps, their trials and jobs: a job coly-t0 made after sweep
// coly was adopted by its searcher as trial 0's, and a sweep named like another's trial was
// accepted. The searcher adopts only jobs it made for the sweep, and ids are one namespace.
TEST_F(SearcherTest, ASweepAdoptsOnlyItsOwnJobsAndIdsAreOneNamespace) {
  json coly = nine_trials();
  coly["sweep_id"] = "coly";
  searcher_->create(parse_sweep_spec(coly));
  EXPECT_EQ(searcher_->claimant("coly-t0"), "coly");
  EXPECT_EQ(searcher_->claimant("coly-t8-r2"), "coly");
  EXPECT_EQ(searcher_->claimant("coly"), "coly");
  EXPECT_FALSE(searcher_->claimant("coly-t9")) << "no trial 9";
  EXPECT_FALSE(searcher_->claimant("coly-t01"));
  EXPECT_FALSE(searcher_->claimant("colyx"));
  // A job of a trial's id that the sweep did not make (it got past the route somehow): not adopted.
  JobSpec foreign;
  foreign.job_id = "coly-t0";
  foreign.model_id = "coly-t0";
  registry_->create(foreign, 10);
  registry_->update(
      "coly-t0", [](JobRecord& j) { j.state = JobState::kSucceeded; }, true);
  searcher_->tick();  // starts trials 0 and 1; trial 0's job id is taken by the foreign job
  const json view = *searcher_->find("coly");
  ASSERT_FALSE(view["trials"].empty());
  for (const auto& t : view["trials"]) {
    EXPECT_NE(t["state"], "completed") << "a job the sweep did not make counted as its trial: " << t.dump();
  }
  for (const std::string id : {"coly-t3", "coly-t3-r1", "coly"}) {
    json other = nine_trials();
    other["sweep_id"] = id;
    EXPECT_EQ(testing::thrown_code([&] { searcher_->create(parse_sweep_spec(other)); }), ErrorCode::kConflict) << id;
  }
  json wider = nine_trials();
  wider["sweep_id"] = "col";  // its trials (col-t0...) are not coly's, and coly is not one of them
  EXPECT_NO_THROW(searcher_->create(parse_sweep_spec(wider)));
  json parent = nine_trials();
  parent["sweep_id"] = "a";
  json child = nine_trials();
  child["sweep_id"] = "a-t2";
  searcher_->create(parse_sweep_spec(child));
  EXPECT_EQ(testing::thrown_code([&] { searcher_->create(parse_sweep_spec(parent)); }), ErrorCode::kConflict)
      << "sweep a's trial 2 would train model a-t2, another sweep's";
}

TEST_F(SearcherTest, LiveSweepsAndTrialsHaveCaps) {
  SearcherHooks hooks;
  hooks.submit = [](JobSpec) {};
  hooks.free_slots = [] { return 0; };
  SweepSearcher capped(*registry_, home_.path(), hooks, SearcherOptions{2, 9});
  for (const std::string id : {"one", "two"}) {
    json body = nine_trials();
    body["sweep_id"] = id;
    capped.create(parse_sweep_spec(body));
  }
  json third = nine_trials();
  third["sweep_id"] = "three";
  EXPECT_EQ(testing::thrown_code([&] { capped.create(parse_sweep_spec(third)); }), ErrorCode::kTooManyRequests);
  capped.cancel("one");
  EXPECT_NO_THROW(capped.create(parse_sweep_spec(third))) << "a cancelled sweep is not live";
  json many = nine_trials(R"({"type": "random", "epochs": 1})");
  many["sweep_id"] = "many";
  many["trials"] = 10;
  capped.cancel("two");
  EXPECT_EQ(testing::thrown_code([&] { capped.create(parse_sweep_spec(many)); }), ErrorCode::kInvalidArgument);
}

TEST_F(SearcherTest, ABestModelThatCannotBeReadFailsTheSweepWithTheReason) {
  write_models_ = false;
  searcher_->create(parse_sweep_spec(nine_trials()));
  run();
  const json s = sweep();
  EXPECT_EQ(s["state"], "failed");
  EXPECT_NE(s["error"].get<std::string>().find("the best trial's model s-t7 cannot be read"), std::string::npos)
      << s["error"];
  EXPECT_FALSE(std::filesystem::exists(model_dir(home_.path(), "s")));
}

TEST_F(SearcherTest, NoFreeTrainerNoTrial) {
  trainers_.clear();
  searcher_->create(parse_sweep_spec(nine_trials()));
  searcher_->tick();
  EXPECT_TRUE(registry_->list().empty());
  EXPECT_EQ(sweep()["decisions"], 0);
}

TEST_F(SearcherTest, ParallelCapsTheTrialsAtOnce) {
  trainers_.push_back({"10.0.0.3:7000", true, false, false, 4});
  json body = nine_trials();
  body["parallel"] = 3;
  searcher_->create(parse_sweep_spec(body));
  searcher_->tick();
  EXPECT_EQ(registry_->list().size(), 3u);
}

TEST_F(SearcherTest, CancelStopsItsTrialsAndTakesNoMoreDecisions) {
  searcher_->create(parse_sweep_spec(nine_trials()));
  searcher_->tick();
  finish_one();
  const json cancelled = searcher_->cancel("s");
  EXPECT_EQ(cancelled["state"], "cancelled");
  for (const auto& job : registry_->list()) EXPECT_TRUE(is_terminal(job.state)) << job.spec.job_id;
  const auto decisions = sweep()["decisions"];
  searcher_->tick();
  EXPECT_EQ(sweep()["decisions"], decisions);
  EXPECT_EQ(testing::thrown_code([&] { searcher_->cancel("s"); }), ErrorCode::kConflict);
  EXPECT_EQ(testing::thrown_code([&] { searcher_->cancel("nope"); }), ErrorCode::kNotFound);
}

TEST_F(SearcherTest, AnIdInUseIsAConflict) {
  searcher_->create(parse_sweep_spec(nine_trials()));
  EXPECT_EQ(testing::thrown_code([&] { searcher_->create(parse_sweep_spec(nine_trials())); }), ErrorCode::kConflict);
  JobSpec job;
  job.job_id = "taken-t3";
  registry_->create(job, 10);
  json body = nine_trials();
  body["sweep_id"] = "taken";
  EXPECT_EQ(testing::thrown_code([&] { searcher_->create(parse_sweep_spec(body)); }), ErrorCode::kConflict);
  body["sweep_id"] = "taken-t3";
  EXPECT_EQ(testing::thrown_code([&] { searcher_->create(parse_sweep_spec(body)); }), ErrorCode::kConflict);
}

TEST_F(SearcherTest, ASweepWhoseTrialsAllFailFails) {
  searcher_->create(parse_sweep_spec(nine_trials()));
  for (int step = 0; step < 100 && sweep()["state"] == "running"; ++step) {
    searcher_->tick();
    for (const auto& job : registry_->list()) {
      if (!is_terminal(job.state))
        registry_->update(
            job.spec.job_id, [](JobRecord& j) { j.state = JobState::kFailed; }, true);
    }
  }
  const json s = sweep();
  EXPECT_EQ(s["state"], "failed");
  EXPECT_EQ(registry_->list().size(), 9u);
  EXPECT_TRUE(s["best"].is_null());
}

}  // namespace
}  // namespace mlswarm
