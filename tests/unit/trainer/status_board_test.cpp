#include "status_board.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace mlswarm {
namespace {

JobUpdate submitted(const std::string& id, double created_at = 1) {
  JobUpdate u;
  u.kind = JobUpdate::Kind::kSubmitted;
  u.job_id = id;
  u.record.spec.job_id = id;
  u.record.spec.model_id = id;
  u.record.created_at = created_at;
  return u;
}

JobUpdate finished(const std::string& id, JobState state, double at) {
  JobUpdate u;
  u.kind = JobUpdate::Kind::kFinished;
  u.job_id = id;
  u.state = state;
  u.at = at;
  return u;
}

TEST(StatusBoard, AppliesALifecycleInOrder) {
  StatusBoard board;
  board.post(submitted("a"));
  JobUpdate started;
  started.kind = JobUpdate::Kind::kStarted;
  started.job_id = "a";
  board.post(started);
  JobUpdate progress;
  progress.kind = JobUpdate::Kind::kProgress;
  progress.job_id = "a";
  progress.progress.epoch = 2;
  progress.progress.step = 7;
  progress.progress.fraction = 0.5;
  progress.progress.loss = 0.3;
  progress.progress.accuracy = 0.8;
  progress.progress.images_per_s = 1000;
  board.post(progress);
  board.post_and_wait(finished("a", JobState::kSucceeded, 50));

  auto job = board.find("a");
  ASSERT_TRUE(job);
  EXPECT_EQ(job->state, JobState::kSucceeded);
  EXPECT_EQ(job->progress.epoch, 2);
  EXPECT_EQ(job->progress.step, 7);
  EXPECT_DOUBLE_EQ(job->progress.fraction, 1.0);
  EXPECT_DOUBLE_EQ(*job->progress.accuracy, 0.8);
  EXPECT_DOUBLE_EQ(job->finished_at, 50);
  EXPECT_GT(job->started_at, 0);
}

TEST(StatusBoard, ProgressWithoutAccuracyKeepsTheLastOne) {
  StatusBoard board;
  board.post(submitted("a"));
  JobUpdate p;
  p.kind = JobUpdate::Kind::kProgress;
  p.job_id = "a";
  p.progress.accuracy = 0.7;
  board.post(p);
  p.progress.accuracy.reset();
  p.progress.step = 3;
  board.post_and_wait(p);
  EXPECT_DOUBLE_EQ(*board.find("a")->progress.accuracy, 0.7);
  EXPECT_EQ(board.find("a")->progress.step, 3);
}

TEST(StatusBoard, UpdatesForUnknownJobsAreIgnored) {
  StatusBoard board;
  board.post_and_wait(finished("ghost", JobState::kFailed, 1));
  EXPECT_FALSE(board.find("ghost"));
  EXPECT_TRUE(board.snapshot().empty());
}

TEST(StatusBoard, ForgetsTheOldestFinishedJobsBeyondTheLimit) {
  StatusBoard board(2);
  for (int i = 0; i < 4; ++i) {
    std::string id = "j" + std::to_string(i);
    board.post(submitted(id, i));
    board.post(finished(id, JobState::kSucceeded, 10 + i));
  }
  board.post(submitted("running", 9));
  board.post_and_wait(finished("nothing", JobState::kFailed, 0));
  auto jobs = board.snapshot();
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].spec.job_id, "j2");
  EXPECT_EQ(jobs[1].spec.job_id, "j3");
  EXPECT_EQ(jobs[2].spec.job_id, "running");
}

// Readers take snapshots while writers post: run under TSan to see the locking hold.
TEST(StatusBoard, ConcurrentPostsAndSnapshots) {
  StatusBoard board;
  board.post_and_wait(submitted("a"));
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        JobUpdate p;
        p.kind = JobUpdate::Kind::kProgress;
        p.job_id = "a";
        p.progress.step = i;
        board.post(p);
      }
    });
  }
  std::thread reader([&] {
    for (int i = 0; i < 2000; ++i) EXPECT_EQ(board.snapshot().size(), 1u);
  });
  for (auto& t : threads) t.join();
  reader.join();
  board.stop();
  EXPECT_EQ(board.find("a")->state, JobState::kQueued);
}

}  // namespace
}  // namespace mlswarm
