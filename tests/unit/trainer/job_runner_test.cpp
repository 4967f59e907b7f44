#include "job_runner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "../../support/error_code.h"
#include "../../support/wait.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

/// A training function that runs until released or asked to stop, and records the order
/// in which jobs started.
struct FakeTraining {
  std::mutex mutex;
  std::vector<std::string> started;
  std::atomic<bool> release{false};
  std::atomic<bool> fail{false};

  TrainFunction function() {
    return [this](const JobSpec& spec, const TrainingHooks& hooks) {
      {
        std::lock_guard lock(mutex);
        started.push_back(spec.job_id);
      }
      JobProgress p;
      p.epoch = 1;
      p.step = 1;
      hooks.report(p);
      while (!release) {
        if (hooks.should_stop()) return TrainingOutcome::kStopped;
        std::this_thread::sleep_for(1ms);
      }
      if (fail) throw Error(ErrorCode::kDataError, "/data/x: wrong magic number");
      return TrainingOutcome::kCompleted;
    };
  }
  std::vector<std::string> order() {
    std::lock_guard lock(mutex);
    return started;
  }
};

JobSpec spec(const std::string& id) {
  JobSpec s;
  s.job_id = id;
  s.model_id = "model-" + id;
  return s;
}

bool in_state(StatusBoard& board, const std::string& id, JobState state) {
  auto job = board.find(id);
  return job && job->state == state;
}

TEST(JobRunner, MoreJobsThanWorkersWaitInOrder) {
  StatusBoard board;
  FakeTraining fake;
  JobRunner runner(board, fake.function(), {1, 16, "t:1"});
  runner.submit(spec("a"));
  runner.submit(spec("b"));
  runner.submit(spec("c"));
  ASSERT_TRUE(eventually([&] { return in_state(board, "a", JobState::kRunning); }));
  EXPECT_TRUE(in_state(board, "b", JobState::kQueued));
  fake.release = true;
  ASSERT_TRUE(eventually([&] { return in_state(board, "c", JobState::kSucceeded); }));
  EXPECT_EQ(fake.order(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(board.find("a")->trainer, "t:1");
}

TEST(JobRunner, TwoWorkersRunTwoJobsAtOnce) {
  StatusBoard board;
  FakeTraining fake;
  JobRunner runner(board, fake.function(), {2, 16, "t:1"});
  runner.submit(spec("a"));
  runner.submit(spec("b"));
  EXPECT_TRUE(
      eventually([&] { return in_state(board, "a", JobState::kRunning) && in_state(board, "b", JobState::kRunning); }));
  fake.release = true;
}

TEST(JobRunner, CancelQueuedAndRunningJobs) {
  StatusBoard board;
  FakeTraining fake;
  JobRunner runner(board, fake.function(), {1, 16, "t:1"});
  runner.submit(spec("a"));
  runner.submit(spec("b"));
  ASSERT_TRUE(eventually([&] { return in_state(board, "a", JobState::kRunning); }));
  EXPECT_EQ(runner.cancel("b").state, JobState::kCancelled);
  runner.cancel("a");
  ASSERT_TRUE(eventually([&] { return in_state(board, "a", JobState::kCancelled); }));
  EXPECT_EQ(fake.order(), std::vector<std::string>{"a"}) << "a cancelled queued job must never start";
  EXPECT_EQ(runner.active_count(), 0u);
  try {
    runner.cancel("a");
    FAIL() << "cancelling a finished job must be a conflict";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConflict);
  }
  try {
    runner.cancel("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
}

TEST(JobRunner, DuplicateJobOrModelIsAConflict) {
  StatusBoard board;
  FakeTraining fake;
  JobRunner runner(board, fake.function(), {1, 16, "t:1"});
  runner.submit(spec("a"));
  auto code_of = [&](JobSpec s) { return testing::thrown_code([&] { runner.submit(std::move(s)); }); };
  EXPECT_EQ(code_of(spec("a")), ErrorCode::kConflict);
  JobSpec same_model = spec("z");
  same_model.model_id = "model-a";
  EXPECT_EQ(code_of(same_model), ErrorCode::kConflict);
  fake.release = true;
}

TEST(JobRunner, PendingQueueIsBounded) {
  StatusBoard board;
  FakeTraining fake;
  JobRunner runner(board, fake.function(), {1, 2, "t:1"});
  runner.submit(spec("a"));
  ASSERT_TRUE(eventually([&] { return in_state(board, "a", JobState::kRunning); }));
  runner.submit(spec("b"));
  runner.submit(spec("c"));
  try {
    runner.submit(spec("d"));
    FAIL() << "a third waiting job must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTooManyRequests);
  }
  EXPECT_FALSE(board.find("d"));
  fake.release = true;
}

TEST(JobRunner, AFailingJobRecordsItsErrorAndTheNextOneRuns) {
  StatusBoard board;
  FakeTraining fake;
  fake.fail = true;
  fake.release = true;
  JobRunner runner(board, fake.function(), {1, 16, "t:1"});
  runner.submit(spec("a"));
  ASSERT_TRUE(eventually([&] { return in_state(board, "a", JobState::kFailed); }));
  EXPECT_NE(board.find("a")->error.find("wrong magic"), std::string::npos);
  fake.fail = false;
  runner.submit(spec("b"));
  EXPECT_TRUE(eventually([&] { return in_state(board, "b", JobState::kSucceeded); }));
}

TEST(JobRunner, ShutdownStopsRunningJobsAndRefusesNewOnes) {
  StatusBoard board;
  FakeTraining fake;
  JobRunner runner(board, fake.function(), {1, 16, "t:1"});
  runner.submit(spec("a"));
  runner.submit(spec("b"));
  ASSERT_TRUE(eventually([&] { return in_state(board, "a", JobState::kRunning); }));
  runner.shutdown();  // joins: returns only once "a" has stopped
  board.stop();
  EXPECT_EQ(board.find("a")->state, JobState::kFailed);
  EXPECT_NE(board.find("a")->error.find("shut down"), std::string::npos);
  EXPECT_EQ(board.find("b")->state, JobState::kFailed);
  EXPECT_THROW(runner.submit(spec("c")), Error);
}

}  // namespace
}  // namespace mlswarm
