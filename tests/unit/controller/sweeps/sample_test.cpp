// Each trial's parameters: reproducible from (seed, trial) alone, within bounds, spread as asked.

#include "sample.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "../../../support/error_code.h"
#include "example_sweep.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using nlohmann::json;

// Trial 0 of example() (seed 1), as this code drew it once (and a Python replica of splitmix64,
// FNV-1a and the mappings agrees).
constexpr int kPinnedBatchSize0 = 97;
constexpr const char* kPinnedModelType0 = "mlp";
constexpr double kPinnedLabelSmoothing0 = 0.1;
constexpr double kPinnedLr0 = 0.013003033395566395;
constexpr double kPinnedWeightDecay0 = 0.00011922543151612253;

SweepSpec example(std::uint64_t seed = 1, int trials = 27) {
  json body = testing::example_sweep_body();
  body["seed"] = seed;
  body["trials"] = trials;
  return parse_sweep_spec(body);
}

/// A sweep of `trials` trials searching one field.
SweepSpec one_field(const std::string& name, const json& space, int trials = kMaxSweepTrials) {
  return parse_sweep_spec({{"sweep_id", "s"},
                           {"trials", trials},
                           {"space", {{name, space}}},
                           {"scheduler", {{"type", "random"}, {"epochs", 1}}}});
}

TEST(SweepSample, SameSeedAndTrialGiveTheSameParameters) {
  const SweepSpec spec = example();
  for (int trial = 0; trial < spec.trials; ++trial) {
    EXPECT_EQ(sample_params(spec, trial), sample_params(spec, trial));
    EXPECT_EQ(sample_params(parse_sweep_spec(to_json(spec)), trial), sample_params(spec, trial))
        << "a spec read back from the journal draws the same";
  }
  EXPECT_EQ(sample_params(spec, 0).size(), 5u);
}

TEST(SweepSample, TheOrderOfDrawsDoesNotMatter) {
  const SweepSpec spec = example();
  std::map<int, json> forward;
  for (int trial = 0; trial < spec.trials; ++trial) forward[trial] = sample_params(spec, trial);
  for (int trial = spec.trials - 1; trial >= 0; --trial) EXPECT_EQ(sample_params(spec, trial), forward[trial]);
}

TEST(SweepSample, TrialsAndSeedsDiffer) {
  const SweepSpec spec = example(1, kMaxSweepTrials);
  std::set<double> lrs;
  for (int trial = 0; trial < spec.trials; ++trial) lrs.insert(sample_params(spec, trial)["lr"].get<double>());
  EXPECT_EQ(lrs.size(), static_cast<std::size_t>(spec.trials));
  EXPECT_NE(sample_params(example(2), 0)["lr"], sample_params(example(1), 0)["lr"]);
}

TEST(SweepSample, TheDrawsArePinned) {
  // A journal written by one build is replayed by the next: the draws may never change.
  const SweepSpec spec = example();
  const json first = sample_params(spec, 0);
  EXPECT_EQ(first["batch_size"], kPinnedBatchSize0);
  EXPECT_EQ(first["model_type"], kPinnedModelType0);
  EXPECT_EQ(first["label_smoothing"], kPinnedLabelSmoothing0);
  EXPECT_NEAR(first["lr"].get<double>(), kPinnedLr0, 1e-15) << "exp and log may differ in the last bit";
  EXPECT_DOUBLE_EQ(first["weight_decay"].get<double>(), kPinnedWeightDecay0);
}

TEST(SweepSample, ValuesStayWithinTheirBounds) {
  const SweepSpec spec = example(7, kMaxSweepTrials);
  const std::set<json> smoothing{0, 0.05, 0.1};
  const std::set<json> models{"convnet", "mlp"};
  for (int trial = 0; trial < spec.trials; ++trial) {
    const json p = sample_params(spec, trial);
    EXPECT_GE(p["lr"].get<double>(), 0.001);
    EXPECT_LT(p["lr"].get<double>(), 0.3);
    EXPECT_GE(p["weight_decay"].get<double>(), 0.0);
    EXPECT_LT(p["weight_decay"].get<double>(), 0.001);
    ASSERT_TRUE(p["batch_size"].is_number_integer());
    EXPECT_GE(p["batch_size"].get<int>(), 32);
    EXPECT_LE(p["batch_size"].get<int>(), 256);
    EXPECT_TRUE(smoothing.contains(p["label_smoothing"])) << p;
    EXPECT_TRUE(models.contains(p["model_type"])) << p;
  }
}

TEST(SweepSample, IntIncludesBothEndsEvenly) {
  const SweepSpec spec = one_field("batch_size", {{"type", "int"}, {"min", 1}, {"max", 3}});
  std::map<int, int> counts;
  for (int trial = 0; trial < spec.trials; ++trial) ++counts[sample_params(spec, trial)["batch_size"].get<int>()];
  ASSERT_EQ(counts.size(), 3u) << "1, 2 and 3, nothing else";
  for (const auto& [value, count] : counts) {
    EXPECT_GE(value, 1);
    EXPECT_LE(value, 3);
    EXPECT_NEAR(count, 333, 60) << value;  // sd ~15
  }
}

TEST(SweepSample, ChoicesComeUpEvenly) {
  const SweepSpec spec = one_field("optimizer", {{"type", "choice"}, {"values", {"sgd", "adam", "adamw"}}});
  std::map<std::string, int> counts;
  for (int trial = 0; trial < spec.trials; ++trial)
    ++counts[sample_params(spec, trial)["optimizer"].get<std::string>()];
  ASSERT_EQ(counts.size(), 3u);
  for (const auto& [value, count] : counts) EXPECT_NEAR(count, 333, 60) << value;
}

TEST(SweepSample, LogUniformCoversDecadesEvenly) {
  const SweepSpec spec = one_field("lr", {{"type", "log_uniform"}, {"min", 1e-4}, {"max", 1e-1}});
  std::map<int, int> per_decade;  // -4: [1e-4, 1e-3), -3, -2
  for (int trial = 0; trial < spec.trials; ++trial) {
    ++per_decade[static_cast<int>(std::floor(std::log10(sample_params(spec, trial)["lr"].get<double>())))];
  }
  ASSERT_EQ(per_decade.size(), 3u);
  for (const auto& [decade, count] : per_decade) EXPECT_NEAR(count, 333, 60) << "1e" << decade;
}

TEST(SweepSample, UniformIsEvenAcrossItsRange) {
  const SweepSpec spec = one_field("momentum", {{"type", "uniform"}, {"min", 0.5}, {"max", 0.9}});
  int low_half = 0;
  for (int trial = 0; trial < spec.trials; ++trial)
    low_half += sample_params(spec, trial)["momentum"].get<double>() < 0.7 ? 1 : 0;
  EXPECT_NEAR(low_half, 500, 60);  // sd ~16
}

TEST(SweepSample, RefusesTrialsOutsideTheSweep) {
  const SweepSpec spec = example();
  EXPECT_EQ(testing::thrown_code([&] { sample_params(spec, -1); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(testing::thrown_code([&] { sample_params(spec, 27); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(testing::thrown_code([&] { trial_job_spec(spec, 27, 0); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(testing::thrown_code([&] { trial_job_spec(spec, 0, -1); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(testing::thrown_code([&] { trial_job_spec(spec, 0, 3); }), ErrorCode::kInvalidArgument) << "rungs 0..2";
}

TEST(SweepTrialJob, IsTheBaseWithTheTrialsParametersAndEpochs) {
  const SweepSpec spec = example();
  const json p = sample_params(spec, 5);
  const JobSpec job = trial_job_spec(spec, 5, 1);
  EXPECT_EQ(job.job_id, "lr-search-t5-r1");
  EXPECT_EQ(job.model_id, "lr-search-t5");
  EXPECT_EQ(job.resume_from, "lr-search-t5") << "rung 1 carries on from rung 0's job";
  EXPECT_EQ(job.sweep_id, "lr-search");
  EXPECT_EQ(job.trial, 5);
  EXPECT_EQ(job.dataset, "fashion-mnist");
  EXPECT_EQ(job.train_opts.epochs, 9) << "every rung on the last rung's schedule";
  EXPECT_EQ(job.stop_after_epoch, 3);
  const JobSpec first = trial_job_spec(spec, 5, 0);
  EXPECT_EQ(first.job_id, "lr-search-t5");
  EXPECT_EQ(first.resume_from, "");
  EXPECT_EQ(first.stop_after_epoch, 1);
  const JobSpec last = trial_job_spec(spec, 5, 2);
  EXPECT_EQ(last.job_id, "lr-search-t5-r2");
  EXPECT_EQ(last.resume_from, "lr-search-t5-r1");
  EXPECT_EQ(last.stop_after_epoch, 0) << "the last rung trains every epoch";
  EXPECT_EQ(job.train_opts.batch_size, p["batch_size"].get<int>()) << "the draw overrides the base's 128";
  EXPECT_EQ(job.train_opts.lr, p["lr"].get<double>());
  EXPECT_EQ(job.train_opts.weight_decay, p["weight_decay"].get<double>());
  EXPECT_EQ(job.train_opts.label_smoothing, p["label_smoothing"].get<double>());
  EXPECT_EQ(to_string(job.model_type), p["model_type"].get<std::string>());
  EXPECT_EQ(to_json(trial_job_spec(spec, 5, 2))["train_opts"]["lr"], to_json(job)["train_opts"]["lr"])
      << "a promotion trains the same trial further";
}

TEST(SweepTrialJob, DefaultsThatHangOnASampledValueFollowIt) {
  const SweepSpec spec = one_field("optimizer", {{"type", "choice"}, {"values", {"sgd", "adam"}}}, 20);
  for (int trial = 0; trial < spec.trials; ++trial) {
    const JobSpec job = trial_job_spec(spec, trial, 0);
    EXPECT_DOUBLE_EQ(job.train_opts.lr, job.train_opts.optimizer == Optimizer::kAdam ? 1e-3 : 0.05);
  }
}

}  // namespace
}  // namespace mlswarm
