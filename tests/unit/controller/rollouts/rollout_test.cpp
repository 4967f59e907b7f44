// The rollout state machine, pure: hand-made figures and a clock the test moves.

#include "rollout.h"

#include <gtest/gtest.h>

#include "../../../support/error_code.h"

namespace mlswarm {
namespace {

using nlohmann::json;
using Kind = RolloutDecision::Kind;

RolloutRecord fresh(const json& body = json{{"model_id", "cand"}, {"version", 7}}) {
  RolloutRecord r;
  r.name = "fmnist";
  r.spec = parse_rollout_spec(body);
  r.stable = {"stable", 4};
  r.started_at = 1000;
  r.phase_started_at = 1000;
  return r;
}

EvaluationFigures evaluation(double stable, double candidate, std::vector<double> candidate_recall = {0.9, 0.9}) {
  EvaluationFigures f;
  f.examples = 2000;
  f.stable_accuracy = stable;
  f.candidate_accuracy = candidate;
  f.classes = {"shirt", "boot"};
  f.stable_recall = {0.9, 0.9};
  f.candidate_recall = std::move(candidate_recall);
  return f;
}

TrafficFigures traffic(std::int64_t requests, std::int64_t errors = 0, double p99 = 5, std::int64_t agreed = -1) {
  TrafficFigures t;
  t.requests = requests;
  t.errors = errors;
  t.p99_ms = p99;
  t.compared = requests;
  t.agreed = agreed < 0 ? requests : agreed;
  return t;
}

/// Runs `record` through `decide` and `apply` at `now` with these figures.
RolloutRecord step(RolloutRecord r, double now, const TrafficFigures& t,
                   const std::optional<EvaluationFigures>& e = std::nullopt) {
  return apply(r, decide(r, e, t, now), now);
}

TEST(RolloutSpec, DefaultsAndRefusalsNameTheField) {
  const RolloutSpec s = parse_rollout_spec(json{{"model_id", "cand"}});
  EXPECT_EQ(s.candidate.version, 0) << "the latest, pinned when the rollout starts";
  EXPECT_EQ(s.steps, (std::vector<int>{5, 25, 50, 100}));
  EXPECT_EQ(s.shadow_seconds, 60);
  EXPECT_EQ(s.gates.max_accuracy_drop, 0.005);
  EXPECT_EQ(parse_rollout_spec(to_json(s)), s) << "to_json reads back";
  const auto field_of = [](const json& body) -> std::string {
    try {
      parse_rollout_spec(body);
    } catch (const Error& e) {
      return e.field();
    }
    return "accepted";
  };
  EXPECT_EQ(field_of(json{{"version", 1}}), "model_id");
  EXPECT_EQ(field_of(json{{"model_id", "../x"}}), "model_id");
  EXPECT_EQ(field_of(json{{"model_id", "c"}, {"steps", {50, 25}}}), "steps");
  EXPECT_EQ(field_of(json{{"model_id", "c"}, {"steps", {0}}}), "steps");
  EXPECT_EQ(field_of(json{{"model_id", "c"}, {"eval_idxs", {10, 5}}}), "eval_idxs");
  EXPECT_EQ(field_of(json{{"model_id", "c"}, {"gates", {{"min_agreement", 2}}}}), "gates.min_agreement");
  EXPECT_EQ(field_of(json{{"model_id", "c"}, {"gates", {{"max_p99", 5}}}}), "gates.max_p99");
  EXPECT_EQ(field_of(json{{"model_id", "c"}, {"weight", 5}}), "weight");
  EXPECT_EQ(field_of(json{{"model_id", "c"}, {"step_seconds", 0}}), "step_seconds");
  EXPECT_EQ(field_of(json::array()), "");
}

TEST(Rollout, AGoodCandidateClimbsEveryStepToPromotion) {
  RolloutRecord r = fresh();
  EXPECT_EQ(decide(r, std::nullopt, {}, 1001).kind, Kind::kWait) << "no live request before the evaluation";
  r = step(r, 1002, {}, evaluation(0.90, 0.91));
  ASSERT_EQ(r.state, RolloutState::kShadow);
  EXPECT_EQ(r.weight(), 0);
  EXPECT_EQ(decide(r, std::nullopt, traffic(500), 1061).kind, Kind::kWait) << "59 s of a 60 s shadow";
  r = step(r, 1062, traffic(500));
  ASSERT_EQ(r.state, RolloutState::kCanary);
  double now = 1062;
  for (int weight : {5, 25, 50, 100}) {
    EXPECT_EQ(r.weight(), weight);
    EXPECT_EQ(decide(r, std::nullopt, traffic(100), now + 119).kind, Kind::kWait);
    now += 120;
    r = step(r, now, traffic(100));
  }
  EXPECT_EQ(r.state, RolloutState::kPromoted);
  EXPECT_EQ(r.weight(), 100);
  EXPECT_EQ(r.history.size(), 6u) << "shadow, four steps, promoted";
  EXPECT_EQ(decide(r, std::nullopt, traffic(100), now + 1000).kind, Kind::kWait) << "an ended rollout decides nothing";
}

TEST(Rollout, AWorseCandidateIsRolledBackAtEvaluationWithTheClassAndItsFigures) {
  RolloutRecord overall = step(fresh(), 1001, {}, evaluation(0.90, 0.88));
  EXPECT_EQ(overall.state, RolloutState::kRolledBack);
  EXPECT_NE(overall.reason.find("accuracy_drop 0.02 above the limit 0.005"), std::string::npos) << overall.reason;
  EXPECT_NE(overall.reason.find("0.9000 -> 0.8800"), std::string::npos) << overall.reason;
  RolloutRecord one_class = step(fresh(), 1001, {}, evaluation(0.90, 0.90, {0.95, 0.85}));
  EXPECT_EQ(one_class.state, RolloutState::kRolledBack);
  EXPECT_NE(one_class.reason.find("class_recall_drop:boot 0.05"), std::string::npos) << one_class.reason;
  EXPECT_EQ(one_class.weight(), 0);
}

TEST(Rollout, ALiveGateThatFailsRollsBackFromItsStep) {
  RolloutRecord r = fresh(json{{"model_id", "c"}, {"gates", {{"max_p99_ms", 50}}}});
  r = step(r, 1001, {}, evaluation(0.9, 0.9));
  r = step(r, 1061, traffic(100, 0, 12));
  ASSERT_EQ(r.state, RolloutState::kCanary);
  r = step(r, 1181, traffic(100, 0, 80));  // step 1 of 4: 80 ms against a 50 ms limit
  EXPECT_EQ(r.state, RolloutState::kRolledBack);
  EXPECT_NE(r.reason.find("step 1: p99_ms 80 above the limit 50"), std::string::npos) << r.reason;
  RolloutRecord errors = fresh();
  errors = step(errors, 1001, {}, evaluation(0.9, 0.9));
  errors = step(errors, 1061, traffic(1000, 11));  // 1.1% errors in the shadow phase
  EXPECT_EQ(errors.state, RolloutState::kRolledBack);
  EXPECT_NE(errors.reason.find("the shadow phase: error_rate"), std::string::npos) << errors.reason;
  RolloutRecord disagrees = fresh();
  disagrees = step(disagrees, 1001, {}, evaluation(0.9, 0.9));
  disagrees = step(disagrees, 1061, traffic(1000, 0, 5, 850));
  EXPECT_EQ(disagrees.state, RolloutState::kRolledBack);
  EXPECT_NE(disagrees.reason.find("agreement 0.85 below the limit 0.9"), std::string::npos) << disagrees.reason;
}

TEST(Rollout, TooFewRequestsExtendAPhaseThenRollBack) {
  RolloutRecord r = step(fresh(), 1000, {}, evaluation(0.9, 0.9));
  EXPECT_EQ(decide(r, std::nullopt, traffic(3), 1061).kind, Kind::kWait) << "extended";
  EXPECT_EQ(decide(r, std::nullopt, traffic(3), 1179).kind, Kind::kWait);
  const RolloutDecision doubt = decide(r, std::nullopt, traffic(3), 1181);
  EXPECT_EQ(doubt.kind, Kind::kRollBack);
  EXPECT_NE(doubt.reason.find("3 candidate requests"), std::string::npos) << doubt.reason;
  EXPECT_EQ(decide(r, std::nullopt, traffic(10), 1100).kind, Kind::kCanaryStep) << "enough came later";
}

TEST(Rollout, WithoutShadowOrStepsThePhasesAreSkipped) {
  RolloutRecord no_shadow = step(fresh(json{{"model_id", "c"}, {"shadow_seconds", 0}}), 1001, {}, evaluation(0.9, 0.9));
  EXPECT_EQ(no_shadow.state, RolloutState::kCanary);
  EXPECT_EQ(no_shadow.weight(), 5);
  RolloutRecord direct = step(fresh(json{{"model_id", "c"}, {"shadow_seconds", 0}, {"steps", json::array()}}), 1001, {},
                              evaluation(0.9, 0.9));
  EXPECT_EQ(direct.state, RolloutState::kPromoted);
}

TEST(Rollout, ARecordReadsBack) {
  RolloutRecord r = fresh();
  r = step(r, 1001, {}, evaluation(0.9, 0.9));
  r = step(r, 1061, traffic(50));
  const RolloutRecord back = rollout_record_from_json(to_json(r));
  EXPECT_EQ(to_json(back), to_json(r));
  EXPECT_EQ(back.weight(), 5);
  EXPECT_EQ(testing::thrown_code([] { rollout_record_from_json(json{{"name", "x"}}); }), ErrorCode::kDataError);
}

TEST(RolloutSplit, AKeyAlwaysGetsTheSameBucketAndBucketsAreEven) {
  EXPECT_EQ(split_bucket("client-42"), split_bucket("client-42"));
  int below = 0;
  for (int i = 0; i < 10000; ++i) below += to_candidate("key-" + std::to_string(i), 25) ? 1 : 0;
  EXPECT_NEAR(below, 2500, 300);
  EXPECT_FALSE(to_candidate("anything", 0));
  EXPECT_TRUE(to_candidate("anything", 100));
}

}  // namespace
}  // namespace mlswarm
