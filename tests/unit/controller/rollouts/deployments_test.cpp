// Served names in a real job journal: pins, rollouts' compare-and-set, replicas reading them, and
// the figures of a phase summed over replicas.

#include "deployments.h"

#include <gtest/gtest.h>

#include "../../../support/error_code.h"
#include "../../../support/temp_dir.h"

namespace mlswarm {
namespace {

using nlohmann::json;
using testing::thrown_code;

class DeploymentsTest : public ::testing::Test {
 protected:
  std::map<std::string, int> models_{{"a", 4}, {"b", 7}};
  std::function<ModelRef(const ModelRef&)> latest_ = [this](const ModelRef& m) {
    auto it = models_.find(m.model_id);
    if (it == models_.end()) throw Error(ErrorCode::kNotFound, "unknown model " + m.model_id);
    if (m.version > it->second) throw Error(ErrorCode::kNotFound, "no such version");
    return ModelRef{m.model_id, m.version == 0 ? it->second : m.version};
  };
  std::vector<ModelRef> pinned_;
  testing::TempDir home_;
  JobRegistry registry_{home_ / "controller"};
  DeploymentStore store_{registry_, latest_, [this](const ModelRef& m) { pinned_.push_back(m); }};
};

TEST_F(DeploymentsTest, ANamePinsAVersionAndServesIt) {
  EXPECT_FALSE(store_.target("fmnist")) << "no deployment: the name is a model id";
  const Deployment d = store_.put("fmnist", {"a", 0}, 100);
  EXPECT_EQ(d.stable, (ModelRef{"a", 4})) << "version 0: the latest, then pinned";
  ASSERT_EQ(pinned_.size(), 1u);
  EXPECT_EQ(pinned_[0], (ModelRef{"a", 4}));
  auto t = store_.target("fmnist");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->stable, (ModelRef{"a", 4}));
  EXPECT_FALSE(t->candidate);
  EXPECT_EQ(thrown_code([&] { store_.put("x", {"nope", 0}, 100); }), ErrorCode::kNotFound);
  EXPECT_EQ(thrown_code([&] { store_.put("x", {"a", 9}, 100); }), ErrorCode::kNotFound);
  EXPECT_EQ(thrown_code([&] { store_.put("../x", {"a", 1}, 100); }), ErrorCode::kInvalidArgument);
  store_.put("fmnist", {"b", 2}, 101);
  EXPECT_EQ(store_.target("fmnist")->stable, (ModelRef{"b", 2}));
  store_.remove("fmnist");
  EXPECT_FALSE(store_.target("fmnist"));
  EXPECT_EQ(thrown_code([&] { store_.remove("fmnist"); }), ErrorCode::kNotFound);
  store_.put("fmnist", {"a", 3}, 102);  // a removed name can be put again
  EXPECT_EQ(store_.find("fmnist")->stable, (ModelRef{"a", 3}));
}

TEST_F(DeploymentsTest, ARolloutIsOneAtATimeAndEachDecisionACompareAndSet) {
  store_.put("n", {"a", 4}, 100);
  RolloutSpec spec = parse_rollout_spec(
      json{{"model_id", "b"}, {"steps", {50, 100}}, {"shadow_seconds", 0}, {"gates", {{"min_agreement", 0}}}});
  const Deployment started = store_.start_rollout("n", spec, 200);
  EXPECT_EQ(started.rollout->spec.candidate, (ModelRef{"b", 7})) << "the candidate's version pinned at start";
  EXPECT_EQ(thrown_code([&] { store_.start_rollout("n", spec, 201); }), ErrorCode::kConflict);
  EXPECT_EQ(thrown_code([&] { store_.put("n", {"a", 1}, 201); }), ErrorCode::kConflict);
  EXPECT_EQ(thrown_code([&] { store_.remove("n"); }), ErrorCode::kConflict);
  RolloutDecision step;
  step.kind = RolloutDecision::Kind::kCanaryStep;
  step.step = 0;
  ASSERT_TRUE(store_.decide("n", 1, step, 210));
  EXPECT_FALSE(store_.decide("n", 1, step, 211)) << "decided meanwhile (a second leader): nothing happens twice";
  auto t = store_.target("n");
  ASSERT_TRUE(t->candidate);
  EXPECT_EQ(t->weight, 50);
  EXPECT_FALSE(t->compare) << "the agreement gate is off (min_agreement 0): no second opinion to pay for";
  RolloutDecision promote;
  promote.kind = RolloutDecision::Kind::kPromote;
  ASSERT_TRUE(store_.decide("n", 2, promote, 220));
  EXPECT_EQ(store_.find("n")->stable, (ModelRef{"b", 7})) << "a promotion pins the candidate";
  EXPECT_FALSE(store_.target("n")->candidate);
  EXPECT_EQ(thrown_code([&] { store_.abort("n", 230); }), ErrorCode::kConflict) << "nothing under way";
}

TEST_F(DeploymentsTest, AnAbortServesTheStableAtOnceAndAReplicaSeesWhatTheJournalSays) {
  store_.put("n", {"a", 4}, 100);
  store_.start_rollout("n", parse_rollout_spec(json{{"model_id", "b"}, {"shadow_seconds", 0}}), 200);
  RolloutDecision step;
  step.kind = RolloutDecision::Kind::kCanaryStep;
  step.step = 1;
  store_.decide("n", 1, step, 210);
  JobRegistry follower_registry(home_ / "controller", false);  // another replica, reading the same journal
  DeploymentStore follower(follower_registry, latest_);
  EXPECT_EQ(follower.target("n")->weight, 25);
  EXPECT_TRUE(follower.target("n")->compare) << "the agreement gate is on by default: the stable's opinion asked";
  store_.abort("n", 220);
  follower_registry.refresh();
  EXPECT_FALSE(follower.target("n")->candidate) << "the follower serves the stable again after its refresh";
  EXPECT_EQ(follower.find("n")->rollout->state, RolloutState::kAborted);
}

TEST_F(DeploymentsTest, DeploysHappenOnce) {
  EXPECT_FALSE(store_.claimed("job/j1"));
  EXPECT_TRUE(store_.claim_once("job/j1", 1));
  EXPECT_TRUE(store_.claimed("job/j1"));
  EXPECT_FALSE(store_.claim_once("job/j1", 2));
  JobRegistry next_leader(home_ / "controller", false);
  DeploymentStore other(next_leader, latest_);
  EXPECT_FALSE(other.claim_once("job/j1", 3)) << "a new leader does not deploy it again";
}

}  // namespace
}  // namespace mlswarm
