// The sweep spec: what a client sends to start a sweep, and every way it can be wrong.

#include "sweep_spec.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "../../../support/error_code.h"
#include "example_sweep.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using nlohmann::json;

/// The example of the design: five fields searched with ASHA over 1, 3 and 9 epochs.
json example() { return testing::example_sweep_body(); }

/// `body` with the value at `pointer` ("/space/lr/min") replaced, or removed when null.
json with(json body, const std::string& pointer, const json& value) {
  const json::json_pointer at(pointer);
  if (value.is_null()) {
    body[at.parent_pointer()].erase(at.back());
  } else {
    body[at] = value;
  }
  return body;
}

/// The field named by the kInvalidArgument that parsing `body` throws.
std::string rejected_field(const json& body) {
  EXPECT_EQ(testing::thrown_code([&] { parse_sweep_spec(body); }), ErrorCode::kInvalidArgument) << body.dump();
  try {
    parse_sweep_spec(body);
  } catch (const Error& e) {
    return e.field();
  }
  return "<accepted>";
}

TEST(SweepSpec, ParsesTheExample) {
  const SweepSpec spec = parse_sweep_spec(example());
  EXPECT_EQ(spec.sweep_id, "lr-search");
  EXPECT_EQ(spec.trials, 27);
  EXPECT_EQ(spec.seed, 1u);
  EXPECT_EQ(spec.base, example()["base"]) << "kept as sent, so that each trial's defaults follow its values";
  ASSERT_EQ(spec.space.size(), 5u);
  EXPECT_EQ(spec.space[0].name, "batch_size") << "sorted by name";
  EXPECT_EQ(spec.space[0].type, ParamType::kInt);
  EXPECT_EQ(spec.space[0].min, 32);
  EXPECT_EQ(spec.space[0].max, 256);
  EXPECT_EQ(spec.space[1].name, "label_smoothing");
  EXPECT_EQ(spec.space[1].values, (std::vector<json>{0, 0.05, 0.1}));
  EXPECT_EQ(spec.space[2].name, "lr");
  EXPECT_EQ(spec.space[2].type, ParamType::kLogUniform);
  EXPECT_EQ(spec.scheduler, SchedulerType::kAsha);
  EXPECT_EQ(spec.asha, (AshaConfig{.min_epochs = 1, .eta = 3, .max_epochs = 9}));
}

TEST(SweepSpec, DefaultsSeedRAndEtaAndBase) {
  const SweepSpec spec = parse_sweep_spec(json::parse(R"({"sweep_id": "s", "trials": 27,
      "space": {"lr": {"type": "uniform", "min": 0.01, "max": 0.1}}, "scheduler": {"type": "asha", "R": 27}})"));
  EXPECT_EQ(spec.seed, 0u);
  EXPECT_EQ(spec.base, json::object());
  EXPECT_EQ(spec.asha, (AshaConfig{.min_epochs = 1, .eta = 3, .max_epochs = 27}));
}

TEST(SweepSpec, RandomSearchIsOneRungOfItsEpochs) {
  const SweepSpec spec = parse_sweep_spec(with(example(), "/scheduler", {{"type", "random"}, {"epochs", 5}}));
  EXPECT_EQ(spec.scheduler, SchedulerType::kRandom);
  EXPECT_EQ(rung_epochs(spec.asha), std::vector<int>{5});
}

TEST(SweepSpec, RoundTripsThroughJson) {
  json big_seed = with(example(), "/seed", std::numeric_limits<std::uint64_t>::max());
  json random = with(example(), "/scheduler", {{"type", "random"}, {"epochs", 4}});
  for (const json& body : {example(), big_seed, random}) {
    const SweepSpec spec = parse_sweep_spec(body);
    const SweepSpec again = parse_sweep_spec(to_json(spec));
    EXPECT_EQ(again, spec) << body.dump();
    EXPECT_EQ(to_json(again), to_json(spec));
  }
  EXPECT_EQ(parse_sweep_spec(big_seed).seed, std::numeric_limits<std::uint64_t>::max());
}

TEST(SweepSpec, ASearchedFieldMayAlsoBeInTheBase) {
  // The example sets batch_size and model_type in both: each trial's draw overrides the base.
  EXPECT_NO_THROW(parse_sweep_spec(example()));
}

TEST(SweepSpec, RejectsBadTopLevelFields) {
  EXPECT_EQ(rejected_field(json::array()), "");
  EXPECT_EQ(rejected_field(with(example(), "/colour", "red")), "colour");
  EXPECT_EQ(rejected_field(with(example(), "/sweep_id", nullptr)), "sweep_id");
  EXPECT_EQ(rejected_field(with(example(), "/sweep_id", "../etc")), "sweep_id");
  EXPECT_EQ(rejected_field(with(example(), "/sweep_id", std::string(62, 'a'))), "sweep_id")
      << "valid alone, but its trial ids (\"aaa...-t26\") are longer than 64";
  EXPECT_EQ(rejected_field(with(example(), "/trials", 0)), "trials");
  EXPECT_EQ(rejected_field(with(example(), "/trials", 1001)), "trials");
  EXPECT_EQ(rejected_field(with(example(), "/trials", 2.5)), "trials");
  EXPECT_EQ(rejected_field(with(example(), "/trials", nullptr)), "trials");
  EXPECT_EQ(rejected_field(with(example(), "/seed", -1)), "seed");
  EXPECT_EQ(rejected_field(with(example(), "/seed", "1")), "seed");
}

TEST(SweepSpec, RejectsABaseThatSetsWhatTheSweepOwns) {
  EXPECT_EQ(rejected_field(with(example(), "/base/job_id", "j")), "base.job_id");
  EXPECT_EQ(rejected_field(with(example(), "/base/model_id", "m")), "base.model_id");
  EXPECT_EQ(rejected_field(with(example(), "/base/attempt", 2)), "base.attempt");
  EXPECT_EQ(rejected_field(with(example(), "/base/train_opts/epochs", 3)), "base.train_opts.epochs");
  EXPECT_EQ(rejected_field(with(example(), "/base/train_opts/patience", 2)), "base.train_opts.patience");
  const json random = with(example(), "/scheduler", {{"type", "random"}, {"epochs", 10}});
  EXPECT_NO_THROW(parse_sweep_spec(with(random, "/base/train_opts/patience", 2)))
      << "early stopping ends a trial before its rung under ASHA only";
}

TEST(SweepSpec, RejectsABaseThatIsNoJobSpec) {
  EXPECT_EQ(rejected_field(with(example(), "/base", json::array())), "base");
  // Any valid name may be a folder dataset (whether it is registered: the /sweeps route); no id is refused.
  EXPECT_EQ(rejected_field(with(example(), "/base/dataset", "../imagenet")), "base.dataset");
  EXPECT_EQ(rejected_field(with(example(), "/base/train_opts/lr", 0)), "base.train_opts.lr");
  EXPECT_EQ(rejected_field(with(example(), "/base/train_opts/colour", 1)), "base.train_opts.colour");
  try {
    parse_sweep_spec(with(example(), "/base/train_opts/momentum", 2));
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "base: train_opts.momentum must be in [0, 0.999]");
  }
}

TEST(SweepSpec, RejectsFieldsThatCannotBeSearched) {
  EXPECT_EQ(rejected_field(with(example(), "/space", json::object())), "space");
  EXPECT_EQ(rejected_field(with(example(), "/space", nullptr)), "space");
  const json range = {{"type", "int"}, {"min", 1}, {"max", 3}};
  EXPECT_EQ(rejected_field(with(example(), "/space/epochs", range)), "space.epochs");
  EXPECT_EQ(rejected_field(with(example(), "/space/seed", range)), "space.seed");
  EXPECT_EQ(rejected_field(with(example(), "/space/dataset", {{"type", "choice"}, {"values", {"cifar10"}}})),
            "space.dataset");
  try {
    parse_sweep_spec(with(example(), "/space/epochs", range));
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "space.epochs: epochs is not searchable, the scheduler sets them");
  }
}

TEST(SweepSpec, RejectsATypeThatDoesNotFitTheField) {
  EXPECT_EQ(rejected_field(with(example(), "/space/lr", 0.1)), "space.lr");
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/type", nullptr)), "space.lr.type");
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/type", "gaussian")), "space.lr.type");
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/type", "int")), "space.lr.type");
  EXPECT_EQ(rejected_field(with(example(), "/space/batch_size/type", "uniform")), "space.batch_size.type");
  EXPECT_EQ(rejected_field(with(example(), "/space/optimizer", {{"type", "uniform"}, {"min", 0}, {"max", 1}})),
            "space.optimizer.type");
}

TEST(SweepSpec, RejectsBadRanges) {
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/step", 2)), "space.lr.step");
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/min", nullptr)), "space.lr.min");
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/min", "0.1")), "space.lr.min");
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/max", 0.0005)), "space.lr.max");
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/min", 0)), "space.lr.min") << "log_uniform needs min > 0";
  EXPECT_EQ(rejected_field(with(example(), "/space/weight_decay/max", 0)), "space.weight_decay.max") << "min < max";
  EXPECT_EQ(rejected_field(with(example(), "/space/batch_size/min", 32.5)), "space.batch_size.min");
  EXPECT_EQ(rejected_field(with(example(), "/space/batch_size/max", 16)), "space.batch_size.max");
  EXPECT_NO_THROW(parse_sweep_spec(with(example(), "/space/batch_size/max", 32))) << "int is inclusive: min == max";
}

TEST(SweepSpec, RejectsValuesAJobSpecWouldRefuse) {
  // Each end of a range and each choice goes through parse_job_spec.
  EXPECT_EQ(rejected_field(with(example(), "/space/lr/max", 11)), "space.lr.max");
  EXPECT_EQ(rejected_field(with(example(), "/space/weight_decay/min", -0.1)), "space.weight_decay.min");
  EXPECT_EQ(rejected_field(with(example(), "/space/batch_size/min", 0)), "space.batch_size.min");
  const json momentum = {{"type", "uniform"}, {"min", 0.5}, {"max", 1.5}};
  EXPECT_EQ(rejected_field(with(example(), "/space/momentum", momentum)), "space.momentum.max");
  EXPECT_EQ(rejected_field(with(example(), "/space/label_smoothing/values/2", 0.6)), "space.label_smoothing.values");
  EXPECT_EQ(rejected_field(with(example(), "/space/model_type/values/1", "transformer")), "space.model_type.values");
  const json optimizer = {{"type", "choice"}, {"values", {"sgd", "rmsprop"}}};
  EXPECT_EQ(rejected_field(with(example(), "/space/optimizer", optimizer)), "space.optimizer.values");
  try {
    parse_sweep_spec(with(example(), "/space/lr/max", 11));
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "space.lr.max: train_opts.lr must be in (0, 10]");
  }
}

TEST(SweepSpec, RejectsBadChoices) {
  EXPECT_EQ(rejected_field(with(example(), "/space/model_type/values", json::array())), "space.model_type.values");
  EXPECT_EQ(rejected_field(with(example(), "/space/model_type/values", "mlp")), "space.model_type.values");
  EXPECT_EQ(rejected_field(with(example(), "/space/model_type/values/1", "convnet")), "space.model_type.values")
      << "twice";
  EXPECT_EQ(rejected_field(with(example(), "/space/model_type/min", 0)), "space.model_type.min");
}

TEST(SweepSpec, RejectsBadSchedulers) {
  EXPECT_EQ(rejected_field(with(example(), "/scheduler", nullptr)), "scheduler");
  EXPECT_EQ(rejected_field(with(example(), "/scheduler", "asha")), "scheduler");
  EXPECT_EQ(rejected_field(with(example(), "/scheduler/type", "hyperband")), "scheduler.type");
  EXPECT_EQ(rejected_field(with(example(), "/scheduler/R", nullptr)), "scheduler.R");
  EXPECT_EQ(rejected_field(with(example(), "/scheduler/R", 1001)), "scheduler.R");
  EXPECT_EQ(rejected_field(with(example(), "/scheduler/r", 10)), "scheduler.r");
  EXPECT_EQ(rejected_field(with(example(), "/scheduler/r", 0)), "scheduler.r");
  EXPECT_EQ(rejected_field(with(example(), "/scheduler/eta", 1)), "scheduler.eta");
  EXPECT_EQ(rejected_field(with(example(), "/trials", 8)), "trials") << "rungs 1, 3, 9: 9 trials to reach the last";
  EXPECT_NO_THROW(parse_sweep_spec(with(example(), "/trials", 9)));
  EXPECT_EQ(rejected_field(with(with(example(), "/trials", 9), "/scheduler/R", 10)), "trials") << "1, 3, 9, 10: 27";
  EXPECT_EQ(rejected_field(with(example(), "/scheduler/epochs", 9)), "scheduler.epochs");
  const json random = with(example(), "/scheduler", {{"type", "random"}, {"epochs", 4}});
  EXPECT_EQ(rejected_field(with(random, "/scheduler/epochs", nullptr)), "scheduler.epochs");
  EXPECT_EQ(rejected_field(with(random, "/scheduler/epochs", 0)), "scheduler.epochs");
  EXPECT_EQ(rejected_field(with(random, "/scheduler/eta", 3)), "scheduler.eta");
  EXPECT_NO_THROW(parse_sweep_spec(with(random, "/trials", 1)));
}

}  // namespace
}  // namespace mlswarm
