#include "mlswarm/attempt_fence.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>

#include "../../../support/error_code.h"
#include "../../../support/temp_dir.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using testing::TempDir;

ErrorCode code_of(const std::function<void()>& f) { return testing::thrown_code(f); }  // kInternal: went through

TEST(AttemptFence, ALaterAttemptFencesOffAnEarlierOne) {
  TempDir dir;
  const auto job = dir / "jobs" / "j1";
  EXPECT_EQ(AttemptFence::current(job), 0);
  AttemptFence first(job, 1);
  first.claim();
  EXPECT_EQ(AttemptFence::current(job), 1);
  bool wrote = false;
  first.guarded([&] { wrote = true; });
  EXPECT_TRUE(wrote);
  AttemptFence second(job, 2);
  second.claim();
  EXPECT_EQ(code_of([&] { first.guarded([&] { FAIL() << "a stale attempt wrote"; }); }), ErrorCode::kSuperseded);
  EXPECT_EQ(code_of([&] { first.claim(); }), ErrorCode::kSuperseded);
  EXPECT_EQ(AttemptFence::current(job), 2);
}

TEST(AttemptFence, AnAttemptStartsOnceAndItsWorkerClaimsIt) {
  TempDir dir;
  const auto job = dir / "jobs" / "j1";
  AttemptFence first(job, 1);
  first.start();
  EXPECT_EQ(AttemptFence::current(job), 1);
  EXPECT_EQ(code_of([&] { first.start(); }), ErrorCode::kConflict) << "a replayed dispatch started it again";
  EXPECT_EQ(code_of([&] { AttemptFence(job, 1).start(); }), ErrorCode::kConflict) << "after a restart";
  EXPECT_EQ(code_of([&] { first.claim(); }), ErrorCode::kInternal) << "the worker of the started attempt";
  AttemptFence(job, 3).start();
  EXPECT_EQ(code_of([&] { AttemptFence(job, 2).start(); }), ErrorCode::kSuperseded);
  EXPECT_EQ(AttemptFence::current(job), 3);
  // Attempt 0 (a job posted to a trainer by hand) is not fenced.
  const auto adhoc = dir / "jobs" / "j0";
  AttemptFence(adhoc, 0).start();
  EXPECT_EQ(code_of([&] { AttemptFence(adhoc, 0).start(); }), ErrorCode::kInternal);
}

TEST(AttemptFence, TheCheckAndTheWriteAreOneStep) {
  // Attempt 1 passes its check and writes slowly; attempt 2's claim must wait for that write
  // to end, so the write can never land after attempt 2 started.
  TempDir dir;
  const auto job = dir / "jobs" / "j1";
  AttemptFence(job, 1).claim();
  std::atomic<bool> writing{false}, claimed{false}, claimed_during_write{false};
  auto slow_write = std::async(std::launch::async, [&] {
    AttemptFence(job, 1).guarded([&] {
      writing = true;
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
      while (std::chrono::steady_clock::now() < until) claimed_during_write = claimed_during_write || claimed.load();
    });
  });
  while (!writing) std::this_thread::yield();
  AttemptFence(job, 2).claim();
  claimed = true;
  slow_write.get();
  EXPECT_FALSE(claimed_during_write) << "the claim went through while the older attempt was writing";
}

}  // namespace
}  // namespace mlswarm
