// A rollout phase's figures as replicas write them and the leader sums them.

#include "rollout_serving.h"

#include <gtest/gtest.h>

#include "../../../support/error_code.h"

namespace mlswarm {
namespace {

PhaseCounters replica(std::int64_t requests, std::int64_t errors, std::size_t bucket, std::int64_t agreed) {
  PhaseCounters c;
  c.phase = "p";
  c.requests = requests;
  c.errors = errors;
  c.compared = requests;
  c.agreed = agreed;
  c.latency_buckets.assign(kLatencyBoundsMs.size() + 1, 0);
  c.latency_buckets[bucket] = requests;
  return c;
}

TEST(RolloutFigures, ReplicasAreSummedAndTheirP99ReadFromTheMergedBuckets) {
  // 990 fast requests on one replica (under 1 ms), 10 slow on another (under 50 ms): p99 is
  // the fast bucket's bound; 20 slow: the slow one's.
  TrafficFigures f = sum_figures({replica(990, 1, 2, 980), replica(10, 0, 11, 10)});
  EXPECT_EQ(f.requests, 1000);
  EXPECT_EQ(f.errors, 1);
  EXPECT_EQ(f.compared, 1000);
  EXPECT_EQ(f.agreed, 990);
  EXPECT_EQ(f.p99_ms, 1.0);
  EXPECT_EQ(sum_figures({replica(980, 0, 2, 980), replica(20, 0, 11, 20)}).p99_ms, 50.0);
  EXPECT_EQ(sum_figures({}).requests, 0);
}

TEST(RolloutFigures, AReplicasFileReadsBackAndAForgedOneIsRefused) {
  const PhaseCounters c = replica(5, 1, 3, 4);
  const PhaseCounters back = phase_counters_from_json(to_json(c));
  EXPECT_EQ(back.requests, 5);
  EXPECT_EQ(back.latency_buckets, c.latency_buckets);
  nlohmann::json forged = to_json(c);
  forged["requests"] = -3;
  EXPECT_EQ(testing::thrown_code([&] { phase_counters_from_json(forged); }), ErrorCode::kDataError);
  forged = to_json(c);
  forged["latency_buckets"] = std::vector<int>(500, 1);
  EXPECT_EQ(testing::thrown_code([&] { phase_counters_from_json(forged); }), ErrorCode::kDataError);
  EXPECT_EQ(replica_file_name("10.0.0.5:48515"), "10.0.0.5_48515");
  EXPECT_EQ(replica_file_name("../../x"), ".._.._x");
}

}  // namespace
}  // namespace mlswarm
