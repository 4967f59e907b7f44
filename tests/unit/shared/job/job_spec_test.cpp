#include "mlswarm/job.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "mlswarm/error.h"
#include "mlswarm/ids.h"

namespace mlswarm {
namespace {

using nlohmann::json;

/// The field named by the Error that parsing `body` throws; fails the test if none is thrown.
std::string rejected_field(const json& body) {
  try {
    parse_job_spec(body);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    return e.field();
  }
  ADD_FAILURE() << "accepted: " << body.dump();
  return "<accepted>";
}

TEST(JobSpec, SeedSpecParsesWithDefaults) {
  JobSpec spec = parse_job_spec(json::parse(R"({"model_id": "fmnist-a", "model_type": "convnet",
      "example_idxs": [0, 60000], "train_opts": {"epochs": 3}})"));
  EXPECT_EQ(spec.model_id, "fmnist-a");
  EXPECT_EQ(spec.dataset, "fashion-mnist");
  ASSERT_TRUE(spec.example_idxs.has_value());
  EXPECT_EQ(spec.example_idxs->second, 60000);
  EXPECT_EQ(spec.train_opts.epochs, 3);
  EXPECT_EQ(spec.train_opts.batch_size, 128);
  EXPECT_EQ(spec.train_opts.optimizer, Optimizer::kSgd);
  EXPECT_EQ(spec.train_opts.device, TrainDevice::kAuto);
}

TEST(JobSpec, AdamGetsItsOwnDefaultLearningRate) {
  auto spec = parse_job_spec(json::parse(R"({"train_opts": {"optimizer": "adam"}})"));
  EXPECT_DOUBLE_EQ(spec.train_opts.lr, 1e-3);
}

TEST(JobSpec, LabelSmoothingDefaultsToATenthAndAnExplicitZeroSurvivesARoundTrip) {
  EXPECT_DOUBLE_EQ(parse_job_spec(json::object()).train_opts.label_smoothing, 0.1);
  auto off = parse_job_spec(json::parse(R"({"model_id": "m", "train_opts": {"label_smoothing": 0}})"));
  EXPECT_DOUBLE_EQ(off.train_opts.label_smoothing, 0.0);
  EXPECT_DOUBLE_EQ(parse_job_spec(to_json(off)).train_opts.label_smoothing, 0.0)
      << "a journaled or checkpointed spec keeps the 0 its user asked for";
}

TEST(JobSpec, RoundTripsThroughJson) {
  auto spec = parse_job_spec(json::parse(
      R"({"model_id": "m", "job_id": "j1", "dataset": "cifar10", "example_idxs": [5, 10],
          "train_opts": {"epochs": 2, "lr": 0.1, "seed": 7, "device": "cpu"}})"));
  auto again = parse_job_spec(to_json(spec));
  EXPECT_EQ(to_json(again), to_json(spec));
}

TEST(JobSpec, RejectsWrongTypes) {
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"epochs": "10"}})")), "train_opts.epochs");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"epochs": 2.5}})")), "train_opts.epochs");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"lr": true}})")), "train_opts.lr");
  EXPECT_EQ(rejected_field(json::parse(R"({"model_id": 7})")), "model_id");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": []})")), "train_opts");
  EXPECT_EQ(rejected_field(json::parse(R"([1, 2])")), "");
}

TEST(JobSpec, RejectsOutOfRangeValues) {
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"epochs": -1}})")), "train_opts.epochs");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"epochs": 0}})")), "train_opts.epochs");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"batch_size": 0}})")), "train_opts.batch_size");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"lr": 0}})")), "train_opts.lr");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"lr": -0.1}})")), "train_opts.lr");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"momentum": 1.5}})")), "train_opts.momentum");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"seed": -3}})")), "train_opts.seed");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"epochs": 18446744073709551615}})")), "train_opts.epochs");
}

TEST(JobSpec, RejectsUnknownNames) {
  EXPECT_EQ(rejected_field(json::parse(R"({"model_type": "vgg"})")), "model_type");
  // Any other valid name may be a folder dataset: whether one is registered is checked where
  // HOME_DIR is known (require_dataset, folder_dataset_test); a name that is no id is refused here.
  EXPECT_EQ(rejected_field(json::parse(R"({"dataset": "../imagenet"})")), "dataset");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"optimizer": "lbfgs"}})")), "train_opts.optimizer");
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"device": "tpu"}})")), "train_opts.device");
  // A typo must not silently train with the default.
  EXPECT_EQ(rejected_field(json::parse(R"({"train_opts": {"epoch": 3}})")), "train_opts.epoch");
  EXPECT_EQ(rejected_field(json::parse(R"({"modelid": "x"})")), "modelid");
}

TEST(JobSpec, RejectsIdsThatAreNotPathComponents) {
  for (const char* bad : {"../../etc", "..", ".", "a/b", "", "-lead", "x y", "é",
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    EXPECT_EQ(rejected_field(json{{"model_id", bad}}), "model_id") << bad;
    if (*bad) {
      EXPECT_EQ(rejected_field(json{{"job_id", bad}}), "job_id") << bad;
    }
  }
  EXPECT_TRUE(is_valid_id("fmnist-a.v2_1"));
  EXPECT_TRUE(is_valid_id(std::string(64, 'a')));
  EXPECT_FALSE(is_valid_id(std::string(65, 'a')));
}

TEST(JobSpec, RejectsExampleRangesOutsideTheTrainSplit) {
  EXPECT_EQ(rejected_field(json::parse(R"({"example_idxs": [0, 60001]})")), "example_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"example_idxs": [10, 10]})")), "example_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"example_idxs": [-1, 10]})")), "example_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"example_idxs": [1, 2, 3]})")), "example_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"dataset": "cifar10", "example_idxs": [0, 60000]})")), "example_idxs");
}

TEST(JobSpec, TestRangesStayInsideTheTestSplitAndRoundTrip) {
  EXPECT_EQ(rejected_field(json::parse(R"({"test_idxs": [0, 10001]})")), "test_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"test_idxs": [500, 500]})")), "test_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"test_idxs": [-1, 10]})")), "test_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"test_idxs": [0, 1.5]})")), "test_idxs");
  EXPECT_EQ(rejected_field(json::parse(R"({"test_idxs": "0-100"})")), "test_idxs");
  auto spec = parse_job_spec(json::parse(R"({"model_id": "m", "test_idxs": [100, 2100]})"));
  ASSERT_TRUE(spec.test_idxs.has_value());
  EXPECT_EQ(*spec.test_idxs, std::make_pair(std::int64_t{100}, std::int64_t{2100}));
  EXPECT_EQ(to_json(parse_job_spec(to_json(spec)))["test_idxs"], json::parse("[100, 2100]"));
  EXPECT_FALSE(to_json(parse_job_spec(json::parse(R"({"model_id": "m"})"))).contains("test_idxs"))
      << "a spec without it (and the resume key of an older checkpoint) stays as it was";
}

TEST(JobRecordJson, HasTheFieldsClientsRelyOn) {
  JobRecord job;
  job.spec = parse_job_spec(json::parse(R"({"model_id": "m", "job_id": "j"})"));
  job.state = JobState::kRunning;
  job.started_at = 100;
  job.progress.fraction = 0.25;
  json j = to_json(job, 140);
  for (const char* key :
       {"job_id", "model_id", "state", "epoch", "epochs", "step", "progress", "loss", "accuracy", "images_per_s",
        "duration_s", "eta_s", "trainer", "attempts", "error", "spec", "created_at", "updated_at"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_DOUBLE_EQ(j["duration_s"].get<double>(), 40);
  EXPECT_DOUBLE_EQ(j["eta_s"].get<double>(), 120);
  EXPECT_EQ(j["state"], "running");
}

// Found by fuzz_job_spec (UBSan): nlohmann's value<int>() converted an out-of-range float
// with undefined behaviour. Integer fields of records other processes wrote are checked.
TEST(JobRecordJson, RefusesIntegerFieldsOutOfRange) {
  JobRecord record;
  record.spec = parse_job_spec(nlohmann::json{{"model_id", "m1"}, {"job_id", "j1"}});
  nlohmann::json good = to_json(record, 0.0);
  EXPECT_NO_THROW(job_record_from_json(good));
  for (const auto& [field, value] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"step", 1.07778e17},
                                                           {"epoch", -1},
                                                           {"steps_per_epoch", 0.5},
                                                           {"attempts", 1e300},
                                                           {"step", "7"},
                                                           {"epoch", 18446744073709551615ull}}) {
    nlohmann::json bad = good;
    bad[field] = value;
    try {
      job_record_from_json(bad);
      ADD_FAILURE() << field << " = " << value.dump() << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kDataError) << field;
    }
  }
}

}  // namespace
}  // namespace mlswarm
