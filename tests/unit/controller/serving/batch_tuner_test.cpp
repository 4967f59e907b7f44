#include "batch_tuner.h"

#include <algorithm>

#include <gtest/gtest.h>

namespace mlswarm {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

/// A fake server on a fake clock: `demand` examples wait whenever a pass begins (a closed loop of
/// clients split among the workers); a pass of b examples costs `fixed + per_example * b` (by
/// default a large fixed part, which a batch shares: each step up lowers the cost of an
/// example, as on a GPU); each request waited one pass behind the one before and then its own.
struct FakeServer {
  BatchTuner::Clock::time_point now{};  // before the tuner, which starts its first window at it
  BatchTuner tuner;
  int demand = 32;
  microseconds fixed{2600}, per_example{75};

  explicit FakeServer(TunerOptions options) : tuner(options, now) {}

  /// Runs passes for `span` of fake time; returns the largest pass it saw in the last `tail`.
  microseconds run(milliseconds span, milliseconds tail = milliseconds(0)) {
    const auto end = now + span;
    microseconds worst{0};
    while (now < end) {
      const int b = std::min(tuner.batch(), demand);
      const microseconds pass = fixed + per_example * b;
      now += pass;
      tuner.record(now, b, demand > tuner.batch(), pass, std::vector<microseconds>(b, 2 * pass + tuner.wait()));
      if (now >= end - tail) worst = std::max(worst, pass);
    }
    return worst;
  }
};

TunerOptions options(int max_batch = 256, microseconds max_delay = microseconds(0)) {
  TunerOptions o;
  o.target = milliseconds(10);  // a pass may take 5 ms: (5000 - 2600) / 75 = 32 examples
  o.max_batch = max_batch;
  o.max_delay = max_delay;
  return o;
}

TEST(BatchTuner, ConvergesOnASteadyLoadToTheLargestBatchWithinTheTarget) {
  FakeServer s(options());
  s.demand = 64;  // more than the budget allows: the pass time is the limit
  s.run(milliseconds(10000));
  int lo = s.tuner.batch(), hi = s.tuner.batch();
  for (int i = 0; i < 20; ++i) {  // the last 2 s: steady, within the budget, near its edge
    s.run(milliseconds(100));
    lo = std::min(lo, s.tuner.batch());
    hi = std::max(hi, s.tuner.batch());
  }
  EXPECT_GE(lo, 24);
  EXPECT_LE(hi, 32);
  EXPECT_LE(hi - lo, 2);
  EXPECT_LE(s.tuner.last_window().pass_p99, microseconds(5000));
  EXPECT_EQ(s.tuner.wait(), microseconds(0));
}

TEST(BatchTuner, GrowsOnlyAsFarAsTheDemandFillsItsBatches) {
  FakeServer s(options());
  s.demand = 12;
  s.run(milliseconds(5000));
  EXPECT_GE(s.tuner.batch(), 12);
  EXPECT_LE(s.tuner.batch(), 14);  // one step past the demand, then no pass is full again
}

TEST(BatchTuner, BacksOffWithinASecondWhenPassesCostTwiceAsMuchAndGrowsAgainWhenTheyFall) {
  FakeServer s(options());
  s.demand = 64;
  s.run(milliseconds(10000));
  const int settled = s.tuner.batch();
  s.per_example = microseconds(150);  // twice the cost per example: (5000 - 2600) / 150 = 16
  const microseconds worst_late = s.run(milliseconds(1000), milliseconds(300));
  EXPECT_LE(worst_late, microseconds(5000)) << "still over the budget a second after the passes doubled";
  EXPECT_LE(s.tuner.batch(), 16);
  s.per_example = microseconds(75);
  s.run(milliseconds(10000));
  EXPECT_GE(s.tuner.batch(), settled - 2);
}

TEST(BatchTuner, NeverLeavesItsBounds) {
  FakeServer s(options(/*max_batch=*/10));
  s.demand = 64;
  s.fixed = microseconds(1000);
  s.per_example = microseconds(1);
  s.run(milliseconds(5000));
  EXPECT_EQ(s.tuner.batch(), 10);
  s.per_example = microseconds(100000);  // one example is over the target: the cap stays 1, never 0
  s.run(milliseconds(30000));
  EXPECT_EQ(s.tuner.batch(), 1);
}

// On a CPU an example costs about the same in any batch: a larger one serves no more requests a
// second, and only makes the requests queued behind its pass wait longer.
TEST(BatchTuner, StopsGrowingWhereALargerBatchNoLongerLowersTheCostOfAnExample) {
  FakeServer s(options());
  s.demand = 64;
  s.fixed = microseconds(20);
  s.per_example = microseconds(150);
  s.run(milliseconds(10000));
  EXPECT_LE(s.tuner.batch(), 9) << "grown past its start (8) though no step lowered the cost of an example";
  EXPECT_GE(s.tuner.batch(), 8);
  // The passes change (the model's cost falls, or a device shares a large fixed part among a
  // batch): the ceiling is tried again, and the cap grows while its steps pay.
  s.fixed = microseconds(2600);
  s.per_example = microseconds(75);
  s.run(milliseconds(15000));
  EXPECT_GE(s.tuner.batch(), 24);
}

TEST(BatchTuner, AWaitThatDoesNotFillBatchesIsDropped) {
  FakeServer s(options(256, microseconds(2000)));
  s.demand = 2;                 // two clients: batches stay at 2 whatever the wait
  s.fixed = microseconds(200);  // passes of 0.5 ms: latency to spare
  s.per_example = microseconds(150);
  bool tried = false;
  for (int i = 0; i < 30; ++i) {
    s.run(milliseconds(100));
    tried = tried || s.tuner.wait() > microseconds(0);
  }
  EXPECT_TRUE(tried) << "batches far below the cap with latency to spare: a wait is worth a try";
  s.run(milliseconds(300));
  EXPECT_EQ(s.tuner.wait(), microseconds(0));
}

TEST(BatchTuner, AWindowDecidesWithEnoughAnswersOrOnceItIsOld) {
  BatchTuner t(options(), {});
  BatchTuner::Clock::time_point now{};
  now += milliseconds(150);
  t.record(now, 1, true, microseconds(100), {microseconds(100)});  // old enough, too few answers
  EXPECT_EQ(t.decisions(), 0U);
  now += milliseconds(900);
  t.record(now, 1, true, microseconds(100), {microseconds(100)});
  EXPECT_EQ(t.decisions(), 1U);
  EXPECT_EQ(t.last_window().requests, 2U);
  EXPECT_EQ(t.last_window().p99, microseconds(100));
}

}  // namespace
}  // namespace mlswarm
