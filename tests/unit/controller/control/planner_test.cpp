// The controller's decisions, from state to actions, with no socket and no sleep.

#include "planner.h"

#include <gtest/gtest.h>

namespace mlswarm {
namespace {

using namespace std::chrono_literals;

const SteadyClock::time_point kNow = SteadyClock::time_point{} + 1000h;

JobRecord job(const std::string& id, JobState state, int attempt = 0, const std::string& trainer = "") {
  JobRecord j;
  j.spec.job_id = id;
  j.spec.model_id = id;
  j.spec.attempt = attempt;
  j.state = state;
  j.trainer = trainer;
  return j;
}

/// A job as a trainer reports it.
JobRecord report(const std::string& id, JobState state, int attempt, FailureCode failure = FailureCode::kNone) {
  JobRecord j = job(id, state, attempt);
  j.failure = failure;
  j.progress.epoch = 2;
  j.progress.fraction = 0.5;
  return j;
}

TrainerState trainer(const std::string& address, int capacity, std::vector<JobRecord> jobs = {}) {
  TrainerState t;
  t.address = address;
  t.polled = true;
  t.report.capacity = capacity;
  for (const auto& j : jobs) {
    t.report.running += j.state == JobState::kRunning ? 1 : 0;
    t.report.queued += j.state == JobState::kQueued ? 1 : 0;
  }
  t.report.jobs = std::move(jobs);
  return t;
}

ClusterSnapshot snapshot(std::vector<TrainerState> trainers, std::vector<JobRecord> jobs) {
  ClusterSnapshot s;
  s.now = kNow;
  s.trainers = std::move(trainers);
  s.jobs = std::move(jobs);
  return s;
}

template <typename A>
std::vector<A> only(const std::vector<Action>& actions) {
  std::vector<A> out;
  for (const auto& a : actions) {
    if (const A* x = std::get_if<A>(&a)) out.push_back(*x);
  }
  return out;
}

PlannerOptions options() {
  PlannerOptions o;
  o.max_attempts = 3;
  o.retry_backoff = 1000ms;
  o.max_backoff = 30000ms;
  return o;
}

TEST(Planner, QueuedJobsSpreadOverTrainersWithTheMostFreeWorkers) {
  auto actions = plan(snapshot({trainer("a:1", 1), trainer("b:1", 2), trainer("c:1", 1)},
                               {job("j1", JobState::kQueued), job("j2", JobState::kQueued),
                                job("j3", JobState::kQueued), job("j4", JobState::kQueued)}),
                      options());
  auto d = only<action::Dispatch>(actions);
  ASSERT_EQ(d.size(), 4u);
  EXPECT_EQ(d[0].trainers, std::vector<std::string>{"b:1"}) << "two free workers";
  EXPECT_EQ(d[1].trainers, std::vector<std::string>{"a:1"}) << "ties go to the lowest address";
  EXPECT_EQ(d[2].trainers, std::vector<std::string>{"c:1"}) << "equal free workers: the one with fewer jobs";
  EXPECT_EQ(d[3].trainers, std::vector<std::string>{"b:1"});
  for (const auto& x : d) EXPECT_EQ(x.attempt, 1) << "the first attempt of each job";
}

TEST(Planner, AJobThatDoesNotFitHoldsBackTheJobsBehindIt) {
  auto busy = trainer("a:1", 1, {report("other", JobState::kRunning, 1)});
  auto actions = plan(snapshot({busy}, {job("j1", JobState::kQueued), job("j2", JobState::kQueued)}), options());
  EXPECT_TRUE(only<action::Dispatch>(actions).empty());
}

TEST(Planner, GangPlacementTakesDistinctTrainersOrNone) {
  std::vector<TrainerLoad> loads{{"a:1", 2, 0}, {"b:1", 1, 0}, {"c:1", 1, 1}};
  EXPECT_EQ(place(loads, 2), (std::vector<std::string>{"a:1", "b:1"})) << "one rank per trainer";
  EXPECT_EQ(loads[0].busy, 1);
  EXPECT_EQ(loads[1].busy, 1);
  EXPECT_EQ(place(loads, 2), std::vector<std::string>{}) << "only a:1 has a free worker left";
  EXPECT_EQ(loads[0].busy, 1) << "a failed placement takes nothing";
  EXPECT_EQ(place(loads, 1), std::vector<std::string>{"a:1"});
}

TEST(Planner, SuspectDrainingAndUntrustedTrainersGetNoJobs) {
  auto suspect = trainer("a:1", 4);
  suspect.suspect_until = kNow + 5s;
  auto draining = trainer("b:1", 4);
  draining.report.draining = true;
  auto untrusted = trainer("c:1", 4);
  untrusted.trusted = false;
  auto unpolled = trainer("d:1", 4);
  unpolled.polled = false;
  EXPECT_TRUE(only<action::Dispatch>(
                  plan(snapshot({suspect, draining, untrusted, unpolled}, {job("j1", JobState::kQueued)}), options()))
                  .empty());
  suspect.suspect_until = kNow - 1s;
  auto d = only<action::Dispatch>(plan(snapshot({suspect}, {job("j1", JobState::kQueued)}), options()));
  ASSERT_EQ(d.size(), 1u) << "a suspect trainer gets jobs again when its time is up";
}

TEST(Planner, ABackingOffJobWaitsAndLetsLaterJobsGoFirst) {
  auto s = snapshot({trainer("a:1", 1)}, {job("j1", JobState::kQueued, 2), job("j2", JobState::kQueued)});
  s.not_before["j1"] = kNow + 2s;
  auto d = only<action::Dispatch>(plan(s, options()));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].job_id, "j2");
  s.not_before["j1"] = kNow;
  d = only<action::Dispatch>(plan(s, options()));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].job_id, "j1");
  EXPECT_EQ(d[0].attempt, 3) << "the next attempt number";
}

TEST(Planner, ARunningJobFollowsItsTrainersReport) {
  auto t = trainer("a:1", 1, {report("j1", JobState::kRunning, 2)});
  auto actions = plan(snapshot({t}, {job("j1", JobState::kRunning, 2, "a:1")}), options());
  auto p = only<action::Progress>(actions);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].attempt, 2);
  EXPECT_EQ(p[0].report.progress.epoch, 2);
  EXPECT_EQ(actions.size(), 1u);

  t = trainer("a:1", 1, {report("j1", JobState::kSucceeded, 2)});
  auto f = only<action::Finish>(plan(snapshot({t}, {job("j1", JobState::kRunning, 2, "a:1")}), options()));
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].state, JobState::kSucceeded);
  ASSERT_TRUE(f[0].progress) << "the final report carries the last epoch's accuracy";
  EXPECT_EQ(f[0].progress->epoch, 2);

  t = trainer("a:1", 1, {report("j1", JobState::kFailed, 2, FailureCode::kDataError)});
  f = only<action::Finish>(plan(snapshot({t}, {job("j1", JobState::kRunning, 2, "a:1")}), options()));
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].failure, FailureCode::kDataError) << "acted on by code, not by message";
}

TEST(Planner, AnInterruptedJobGoesAgainAtOnceWithoutCountingALostAttempt) {
  auto t = trainer("a:1", 1, {report("j1", JobState::kFailed, 1, FailureCode::kInterrupted)});
  auto r = only<action::Requeue>(plan(snapshot({t}, {job("j1", JobState::kRunning, 1, "a:1")}), options()));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].lost);
  EXPECT_EQ(r[0].backoff, 0ms);
}

// Issue 38: a queued job whose current attempt a trainer reports ended (the dispatch went out,
// the controller that sent it died before recording the answer) was dispatched again, and its
// work done twice. That end is the job's end; a lost attempt (interrupted) still goes again.
TEST(Planner, AQueuedJobWhoseAttemptEndedOnATrainerEndsWithIt) {
  auto done = report("j1", JobState::kSucceeded, 3);
  done.trainer = "a:1";
  auto s = snapshot({trainer("a:1", 2, {done}), trainer("b:1", 2)}, {job("j1", JobState::kQueued, 3)});
  const auto actions = plan(s, options());
  auto f = only<action::Finish>(actions);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].attempt, 3);
  EXPECT_EQ(f[0].state, JobState::kSucceeded);
  ASSERT_TRUE(f[0].progress.has_value());
  EXPECT_EQ(f[0].progress->epoch, 2) << "the attempt's own figures";
  EXPECT_TRUE(only<action::Dispatch>(actions).empty());

  auto interrupted = snapshot({trainer("a:1", 2, {report("j1", JobState::kFailed, 3, FailureCode::kInterrupted)})},
                              {job("j1", JobState::kQueued, 3)});
  EXPECT_TRUE(only<action::Finish>(plan(interrupted, options())).empty());
  EXPECT_EQ(only<action::Dispatch>(plan(interrupted, options())).size(), 1u);
}

TEST(Planner, AFreshControllerLooksAtItsTrainersBeforeDispatchingAJobAgain) {
  auto s = snapshot({trainer("a:1", 2)}, {job("again", JobState::kQueued, 2), job("new", JobState::kQueued, 0)});
  s.settled = false;
  auto d = only<action::Dispatch>(plan(s, options()));
  ASSERT_EQ(d.size(), 1u) << "a new job goes at once";
  EXPECT_EQ(d[0].job_id, "new");
  s.settled = true;
  EXPECT_EQ(only<action::Dispatch>(plan(s, options())).size(), 2u);
}

TEST(Planner, ALostTrainerRequeuesItsJobWithBackoffOnceDiscoveryHasSettled) {
  auto s = snapshot({}, {job("j1", JobState::kRunning, 1, "gone:1")});
  s.settled = false;
  EXPECT_TRUE(plan(s, options()).empty()) << "a fresh controller has not seen every trainer yet";
  s.settled = true;
  auto r = only<action::Requeue>(plan(s, options()));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].lost);
  EXPECT_EQ(r[0].backoff, 1000ms);
  EXPECT_NE(r[0].reason.find("gone:1 lost"), std::string::npos) << r[0].reason;

  s.jobs[0].lost_attempts = 1;
  r = only<action::Requeue>(plan(s, options()));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].backoff, 2000ms) << "doubling per lost attempt";
}

TEST(Planner, ARestartedTrainerThatForgotTheAttemptLosesIt) {
  auto t = trainer("a:1", 1);  // polled, reports nothing
  auto r = only<action::Requeue>(plan(snapshot({t}, {job("j1", JobState::kRunning, 3, "a:1")}), options()));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].lost);
  t = trainer("a:1", 1, {report("j1", JobState::kRunning, 2)});  // an older attempt of it
  r = only<action::Requeue>(plan(snapshot({t}, {job("j1", JobState::kRunning, 3, "a:1")}), options()));
  ASSERT_EQ(r.size(), 1u);
  auto unpolled = trainer("a:1", 1);
  unpolled.polled = false;
  EXPECT_TRUE(plan(snapshot({unpolled}, {job("j1", JobState::kRunning, 3, "a:1")}), options()).empty())
      << "no news is no decision";
}

TEST(Planner, MaxAttemptsLostFailsTheJobWithACode) {
  auto s = snapshot({}, {job("j1", JobState::kRunning, 7, "gone:1")});
  s.jobs[0].lost_attempts = 2;  // this loss is the third of max_attempts 3
  auto f = only<action::Finish>(plan(s, options()));
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].state, JobState::kFailed);
  EXPECT_EQ(f[0].failure, FailureCode::kLostTrainer);
  EXPECT_NE(f[0].error.find("gave up after 3 lost attempts"), std::string::npos) << f[0].error;
  EXPECT_TRUE(only<action::Requeue>(plan(s, options())).empty());
}

TEST(Planner, AttemptsTheRegistryGaveToNobodyAreCancelled) {
  // j1 moved on to attempt 3 elsewhere; j2 was cancelled; j3 is not this controller's.
  auto a = trainer("a:1", 3,
                   {report("j1", JobState::kRunning, 2), report("j2", JobState::kRunning, 1),
                    report("j3", JobState::kRunning, 1), report("j4", JobState::kSucceeded, 1)});
  auto b = trainer("b:1", 1, {report("j1", JobState::kRunning, 3)});
  auto actions =
      plan(snapshot({a, b}, {job("j1", JobState::kRunning, 3, "b:1"), job("j2", JobState::kCancelled, 1, "a:1"),
                             job("j4", JobState::kRunning, 2, "b:1")}),
           options());
  auto c = only<action::Cancel>(actions);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].job_id, "j1");
  EXPECT_EQ(c[0].attempt, 2);
  EXPECT_EQ(c[0].trainer, "a:1");
  EXPECT_EQ(c[1].job_id, "j2");
  EXPECT_EQ(c[1].attempt, 1);
  EXPECT_EQ(only<action::Progress>(actions).size(), 1u) << "attempt 3 on b:1 is the job";
}

TEST(Planner, AQueuedJobWhoseDispatchLandedLateIsAdoptedNotSentAgain) {
  auto slow = trainer("a:1", 1, {report("j1", JobState::kRunning, 2)});
  auto idle = trainer("b:1", 1);
  auto actions = plan(snapshot({slow, idle}, {job("j1", JobState::kQueued, 2)}), options());
  auto adopt = only<action::Adopt>(actions);
  ASSERT_EQ(adopt.size(), 1u);
  EXPECT_EQ(adopt[0].trainer, "a:1");
  EXPECT_EQ(adopt[0].attempt, 2);
  EXPECT_TRUE(only<action::Dispatch>(actions).empty());
  EXPECT_TRUE(only<action::Cancel>(actions).empty());
}

// A data-parallel job whose rank's node died: the surviving rank of attempt 1 still waits on
// its lost peer (until DIST_TIMEOUT_MS) and refuses any other attempt of the job, so it is no
// candidate; found on three Swarm nodes, where every dispatch failed a rank and left the
// others waiting in turn (attempt 16 after two minutes).
TEST(Planner, ATrainerStillHoldingAnAttemptOfTheJobGetsNoOther) {
  JobRecord queued = job("dp", JobState::kQueued, 2);
  queued.spec.trainers = 2;
  auto waiting = trainer("a:1", 2, {report("dp", JobState::kRunning, 1)});
  auto same_model = trainer("b:1", 2, {report("other-job", JobState::kRunning, 1)});
  same_model.report.jobs[0].spec.model_id = "dp";
  auto finished = trainer("c:1", 2, {report("dp", JobState::kFailed, 1)});
  auto idle = trainer("d:1", 2);
  auto none = only<action::Dispatch>(plan(snapshot({waiting, same_model, idle}, {queued}), options()));
  EXPECT_TRUE(none.empty()) << "one trainer free of the job is not enough for two ranks";
  auto d = only<action::Dispatch>(plan(snapshot({waiting, same_model, finished, idle}, {queued}), options()));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].trainers, (std::vector<std::string>{"c:1", "d:1"})) << "an ended attempt holds nothing";
  EXPECT_EQ(d[0].attempt, 3);
}

TEST(Planner, ASupersededOwnerCountsAsALostAttempt) {
  auto t = trainer("a:1", 1, {report("j1", JobState::kFailed, 4, FailureCode::kSuperseded)});
  auto r = only<action::Requeue>(plan(snapshot({t}, {job("j1", JobState::kRunning, 4, "a:1")}), options()));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].lost);
}

TEST(Planner, TheHighestAttemptNumberEndsTheJob) {
  auto f =
      only<action::Finish>(plan(snapshot({trainer("a:1", 1)}, {job("j1", JobState::kQueued, kMaxAttempt)}), options()));
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].failure, FailureCode::kInternal);
}

TEST(Planner, ThePlanIsAFunctionOfTheSnapshot) {
  auto s =
      snapshot({trainer("a:1", 2, {report("j0", JobState::kRunning, 1)}), trainer("b:1", 1)},
               {job("j0", JobState::kRunning, 1, "a:1"), job("j1", JobState::kQueued), job("j2", JobState::kQueued)});
  auto first = plan(s, options());
  auto second = plan(s, options());
  ASSERT_EQ(first.size(), second.size());
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i].index(), second[i].index());
}

TEST(Discovery, FoundTrainersJoinAndSilentOnesAreDroppedAfterMaxMisses) {
  std::map<std::string, TrainerState> table;
  EXPECT_TRUE(apply_discovery(table, {{"a:1", true}, {"b:1", false}}, 2, 100).empty());
  ASSERT_EQ(table.size(), 2u);
  EXPECT_FALSE(table["b:1"].trusted);
  EXPECT_EQ(table["a:1"].last_seen, 100);
  EXPECT_TRUE(apply_discovery(table, {{"b:1", true}}, 2, 101).empty());
  EXPECT_EQ(table["a:1"].misses, 1);
  EXPECT_TRUE(table["b:1"].trusted) << "trust follows the latest proof";
  EXPECT_EQ(apply_discovery(table, {{"b:1", true}}, 2, 102), std::vector<std::string>{"a:1"});
  EXPECT_EQ(table.size(), 1u);
}

}  // namespace
}  // namespace mlswarm
