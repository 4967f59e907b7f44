// Model files and checkpoints: written atomically, read back exactly, and resumable.

#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <tuple>

#include "../../support/bar_mnist.h"
#include "../../support/temp_dir.h"
#include "mlswarm/dataset_cache.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/torch/model_zoo.h"
#include "training.h"
#include "training_parts.h"

namespace mlswarm {
namespace {

using nlohmann::json;
using testing::TempDir;
using testing::write_bar_mnist;
using testing::write_bytes;

TEST(ModelZoo, SavedWeightsLoadIntoAFreshModel) {
  torch::manual_seed(3);
  auto a = make_model(ModelType::kConvnet, 1, 28, 28, 10);
  auto b = make_model(ModelType::kConvnet, 1, 28, 28, 10);
  a->eval();
  b->eval();
  auto x = torch::randn({4, 1, 28, 28});
  ASSERT_FALSE(torch::allclose(a->forward(x), b->forward(x)));
  load_module(b, save_module(a));
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
}

TEST(ModelZoo, WeightsOfAnotherArchitectureAreADataError) {
  auto conv = make_model(ModelType::kConvnet, 1, 28, 28, 10);
  auto mlp = make_model(ModelType::kMlp, 1, 28, 28, 10);
  try {
    load_module(mlp, save_module(conv));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kDataError);
  }
  EXPECT_THROW(load_module(mlp, "not a torch archive"), Error);
}

// Issue 40: a folder dataset's images may be any size; the convnet's classifier stays the size of
// a 32 x 32 model's (8 x 8 positions of 64 channels) from there up.
TEST(ModelZoo, TheConvnetTakesAnySizeWithAClassifierOfBoundedSize) {
  for (auto [c, h, w, inputs] :
       {std::tuple{1, 28, 28, 64 * 7 * 7}, std::tuple{3, 32, 32, 64 * 8 * 8}, std::tuple{3, 64, 64, 64 * 8 * 8},
        std::tuple{3, 224, 224, 64 * 8 * 8}, std::tuple{1, 36, 200, 64 * 8 * 8}}) {
    auto model = make_model(ModelType::kConvnet, c, h, w, 5);
    model->eval();
    EXPECT_EQ(model->forward(torch::rand({2, c, h, w})).sizes(), (std::vector<std::int64_t>{2, 5})) << h << "x" << w;
    std::int64_t first_linear = 0;
    for (const auto& p : model->named_parameters()) {
      if (first_linear == 0 && p.value().dim() == 2) first_linear = p.value().size(1);
    }
    EXPECT_EQ(first_linear, inputs) << h << "x" << w;
  }
}

// A checkpoint of a folder dataset as registered before (another content hash) is not resumed:
// the same spec would carry on training on other images.
TEST(Checkpoint, AFolderRegisteredAgainDoesNotResumeAnOldCheckpoint) {
  const JobSpec spec = parse_job_spec(json{{"job_id", "j"}, {"dataset", "pets"}, {"train_opts", {{"epochs", 2}}}});
  auto model = make_model(ModelType::kConvnet, 3, 16, 16, 3);
  auto optimizer = make_optimizer(model, spec.train_opts);
  ResumePoint point;
  point.next_epoch = 2;
  const std::string payload = encode_checkpoint(model, *optimizer, spec, point, "00000000000000aa");
  EXPECT_TRUE(decode_checkpoint(payload, "c", spec, model, *optimizer, torch::kCPU, "00000000000000aa"));
  EXPECT_FALSE(decode_checkpoint(payload, "c", spec, model, *optimizer, torch::kCPU, "00000000000000bb"));
  EXPECT_FALSE(decode_checkpoint(payload, "c", spec, model, *optimizer, torch::kCPU));
}

TEST(ModelZoo, TheResnetTakesBothInputSizesAndItsWeightsRoundTrip) {
  for (auto [c, h, w] : {std::tuple{1, 28, 28}, std::tuple{3, 32, 32}}) {
    auto a = make_model(ModelType::kResnet, c, h, w, 10);
    auto b = make_model(ModelType::kResnet, c, h, w, 10);
    auto x = torch::randn({4, c, h, w});
    a->forward(x);  // train mode: the batch norms' running statistics move
    a->eval();
    b->eval();
    const auto out = a->forward(x);
    EXPECT_EQ(out.sizes(), (std::vector<std::int64_t>{4, 10}));
    load_module(b, save_module(a));
    EXPECT_TRUE(torch::equal(out, b->forward(x))) << "weights and batch-norm buffers both travel";
  }
  // Residual: three stages of two blocks, each with its own parameters (6 blocks, 2 with a
  // 1x1 shortcut), far more than the convnet's.
  std::size_t blocks = 0;
  for (const auto& child : make_model(ModelType::kResnet, 1, 28, 28, 10)->named_children()) {
    if (child.value()->named_children().size() >= 4) ++blocks;
  }
  EXPECT_EQ(blocks, 6u);
}

class TrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_bar_mnist(data_.path(), 200, 50);
    set_training_threads(1);  // bit-for-bit repeatable on CPU
  }
  JobSpec spec(const std::string& job_id, int epochs) {
    JobSpec s;
    s.job_id = job_id;
    s.model_id = "m-" + job_id;
    s.model_type = ModelType::kConvnet;
    s.dataset = "mnist";
    s.train_opts.epochs = epochs;
    s.train_opts.batch_size = 16;
    s.train_opts.lr = 0.02;
    s.train_opts.device = device();
    return s;
  }
  /// MLSWARM_TEST_DEVICE ("cpu" unless set): scripts/gpu_check.sh runs these on "cuda".
  static TrainDevice device() {
    const char* wanted = std::getenv("MLSWARM_TEST_DEVICE");
    return parse_choice<TrainDevice>(wanted != nullptr ? wanted : "").value_or(TrainDevice::kCpu);
  }
  ModelMeta meta_of(const std::string& model_id) {
    ModelMeta meta;
    load_trained_model(home_.path(), model_id, &meta);
    return meta;
  }

  TempDir data_;
  TempDir home_;
  DatasetCache cache_{data_.path(), home_.path()};
  TrainingEnv env_{home_.path(), &cache_};
};

TEST_F(TrainingTest, WritesModelMetaAndCheckpointEveryEpoch) {
  std::vector<JobProgress> reports;
  TrainingHooks hooks{[&](const JobProgress& p) { reports.push_back(p); }, [] { return false; }};
  ASSERT_EQ(run_training(spec("j1", 2), env_, hooks), TrainingOutcome::kCompleted);
  ModelMeta meta = meta_of("m-j1");
  ASSERT_EQ(meta.epochs.size(), 2u);
  EXPECT_EQ(meta.version, 2);
  EXPECT_EQ(meta.class_names.size(), 10u);
  EXPECT_GT(meta.epochs.back().accuracy, 0.5) << "the bars are trivially learnable";
  EXPECT_TRUE(std::filesystem::exists(home_ / "jobs/j1/checkpoint.pt"));
  for (const auto& dir : {home_ / "jobs/j1", home_ / "models/m-j1"}) {
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
    }
  }
  ASSERT_FALSE(reports.empty());
  EXPECT_TRUE(reports.back().accuracy.has_value());
  EXPECT_DOUBLE_EQ(reports.back().fraction, 1.0);
}

TEST_F(TrainingTest, AResnetTrainsAndWritesPerClassMetrics) {
  JobSpec s = spec("res", 2);
  s.model_type = ModelType::kResnet;
  TrainingHooks hooks{[](const JobProgress&) {}, [] { return false; }};
  ASSERT_EQ(run_training(s, env_, hooks), TrainingOutcome::kCompleted);
  ModelMeta meta = meta_of("m-res");
  EXPECT_EQ(meta.model_type, ModelType::kResnet);
  EXPECT_GT(meta.epochs.back().accuracy, 0.3) << "above chance on the bars after 2 epochs";
  ASSERT_EQ(meta.confusion.size(), 100u);
  std::int64_t total = 0;
  for (auto v : meta.confusion) total += v;
  EXPECT_EQ(total, 50);  // every test image once
  EXPECT_EQ(per_class_accuracy(meta).size(), 10u);
}

TEST_F(TrainingTest, TestIdxsEvaluatesOnThatRangeOfTheTestSplitOnly) {
  JobSpec s = spec("part", 1);
  s.test_idxs = std::make_pair(std::int64_t{10}, std::int64_t{30});
  TrainingHooks hooks{[](const JobProgress&) {}, [] { return false; }};
  ASSERT_EQ(run_training(s, env_, hooks), TrainingOutcome::kCompleted);
  const ModelMeta part = meta_of("m-part");
  std::int64_t total = 0;
  for (auto v : part.confusion) total += v;
  EXPECT_EQ(total, 20) << "images 10..29 of the 50, each once";
  EXPECT_EQ(part.spec["test_idxs"], json::parse("[10, 30]"));

  // Without it: all 50.
  ASSERT_EQ(run_training(spec("full", 1), env_, hooks), TrainingOutcome::kCompleted);
  std::int64_t full_total = 0;
  for (auto v : meta_of("m-full").confusion) full_total += v;
  EXPECT_EQ(full_total, 50);

  // A range past the end of the split the trainer loaded (the spec is checked against the
  // dataset's published size; these test files are smaller): a clear error, no model.
  JobSpec past = spec("past", 1);
  past.test_idxs = std::make_pair(std::int64_t{60}, std::int64_t{100});
  try {
    run_training(past, env_, hooks);
    FAIL() << "a test range past the split trained";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(e.field(), "test_idxs");
  }
  EXPECT_FALSE(std::filesystem::exists(home_ / "models/m-past/model.pt"));
}

TEST(Augmentation, CropFlipIsDeterministicShardableAndReallyCropsAndFlips) {
  // Every pixel holds its column index + 1 (0 is the padding), so a row of the output shows
  // the crop's shift and direction.
  auto x = (torch::arange(28, torch::kFloat32) + 1).view({1, 1, 1, 28}).expand({8, 1, 28, 28}).contiguous();
  TrainOpts o;
  EXPECT_TRUE(torch::equal(augment_batch(x, o, 1, 0, 0, 8), x)) << "none: untouched";
  o.augment = Augment::kCropFlip;
  const auto a = augment_batch(x, o, 1, 0, 0, 8);
  EXPECT_EQ(a.sizes(), x.sizes());
  EXPECT_TRUE(torch::equal(a, augment_batch(x, o, 1, 0, 0, 8))) << "deterministic for (seed, epoch, step)";
  EXPECT_FALSE(torch::equal(a, augment_batch(x, o, 1, 1, 0, 8))) << "another step, other draws";
  EXPECT_TRUE(torch::equal(a.slice(0, 3, 8), augment_batch(x.slice(0, 3, 8), o, 1, 0, 3, 5)))
      << "a rank's share is augmented as the same rows of the whole batch";
  int flipped = 0, shifted = 0;
  for (int i = 0; i < 8; ++i) {
    auto row = a[i][0][14];
    auto inside = row.masked_select(row > 0);  // the image, without padding
    auto steps = inside.slice(0, 1) - inside.slice(0, 0, -1);
    const bool up = torch::all(steps == 1).item<bool>(), down = torch::all(steps == -1).item<bool>();
    EXPECT_TRUE(up || down) << "a crop of one image, read forwards or backwards: " << row;
    flipped += down ? 1 : 0;
    shifted += inside.size(0) < 28 ? 1 : 0;
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 8);
  EXPECT_GT(shifted, 0);
}

TEST(Augmentation, FlipMirrorsWithoutShifting) {
  auto x = (torch::arange(28, torch::kFloat32) + 1).view({1, 1, 1, 28}).expand({8, 1, 28, 28}).contiguous();
  TrainOpts o;
  o.augment = Augment::kFlip;
  const auto a = augment_batch(x, o, 1, 0, 0, 8);
  int flipped = 0;
  for (int i = 0; i < 8; ++i) {
    const bool same = torch::equal(a[i], x[i]), mirrored = torch::equal(a[i], x[i].flip(2));
    EXPECT_TRUE(same || mirrored) << "the whole image, mirrored or not: " << a[i][0][14];
    flipped += mirrored ? 1 : 0;
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 8);
  EXPECT_TRUE(torch::equal(a.slice(0, 3, 8), augment_batch(x.slice(0, 3, 8), o, 1, 0, 3, 5)));
}

TEST_F(TrainingTest, AugmentationLabelSmoothingAndAdamwTrain) {
  JobSpec s = spec("aug", 2);
  s.train_opts.augment = Augment::kCropFlip;
  s.train_opts.label_smoothing = 0.1;
  s.train_opts.optimizer = Optimizer::kAdamW;
  s.train_opts.lr = 1e-3;
  TrainingHooks hooks{[](const JobProgress&) {}, [] { return false; }};
  ASSERT_EQ(run_training(s, env_, hooks), TrainingOutcome::kCompleted);
  // The bars encode the class by position, which crops and flips blur: above chance (0.1) is the claim.
  EXPECT_GT(meta_of("m-aug").epochs.back().accuracy, 0.15);
  const JobSpec back = parse_job_spec(to_json(s));
  EXPECT_EQ(back.train_opts.augment, Augment::kCropFlip);
  EXPECT_DOUBLE_EQ(back.train_opts.label_smoothing, 0.1);
  EXPECT_EQ(back.train_opts.optimizer, Optimizer::kAdamW);
  EXPECT_THROW(parse_job_spec(json{{"model_id", "x"}, {"train_opts", {{"augment", "mixup"}}}}), Error);
  EXPECT_THROW(parse_job_spec(json{{"model_id", "x"}, {"train_opts", {{"label_smoothing", 0.9}}}}), Error);
}

TEST(EarlyStopping, CountsEpochsSinceTheBest) {
  EXPECT_TRUE(is_best_epoch({}, 0.1));
  EXPECT_TRUE(is_best_epoch({0.5, 0.6}, 0.61));
  EXPECT_FALSE(is_best_epoch({0.5, 0.6}, 0.6)) << "a tie is not better";
  EXPECT_FALSE(should_stop_early({0.5, 0.4, 0.4}, 0));
  EXPECT_FALSE(should_stop_early({0.5, 0.4}, 2));
  EXPECT_TRUE(should_stop_early({0.5, 0.4, 0.5}, 2));
  EXPECT_FALSE(should_stop_early({0.5, 0.4, 0.6}, 2));
  EXPECT_FALSE(should_stop_early({0.5, 0.6, 0.4}, 2));
  EXPECT_TRUE(should_stop_early({0.5, 0.6, 0.4, 0.6}, 2));
}

TEST_F(TrainingTest, PatienceStopsAJobThatStopsImprovingAndBestKeepsServingTheBestEpoch) {
  // lr ~0 on a net without batch norm: every epoch's accuracy equals the first one's, so the
  // first is the best and no later one is better.
  JobSpec s = spec("flat", 6);
  s.model_type = ModelType::kMlp;
  s.train_opts.lr = 1e-9;
  s.train_opts.patience = 2;
  s.train_opts.publish = Publish::kBest;
  TrainingHooks hooks{[](const JobProgress&) {}, [] { return false; }};
  ASSERT_EQ(run_training(s, env_, hooks), TrainingOutcome::kCompleted);
  EXPECT_EQ(meta_of("m-flat").version, 1) << "the best epoch is what serving uses by default";
  for (int v : {1, 2, 3}) EXPECT_TRUE(std::filesystem::exists(home_ / "models/m-flat/versions" / std::to_string(v)));
  EXPECT_FALSE(std::filesystem::exists(home_ / "models/m-flat/versions/4")) << "stopped after epoch 3";
  EXPECT_EQ(parse_job_spec(to_json(s)).train_opts.publish, Publish::kBest);
  EXPECT_EQ(to_json(spec("plain", 1))["train_opts"].count("patience"), 0u) << "unset options stay out of the key";
  EXPECT_THROW(parse_job_spec(json{{"model_id", "x"}, {"train_opts", {{"publish", "worst"}}}}), Error);
}

TEST_F(TrainingTest, ATornModelFileIsDetected) {
  TrainingHooks hooks{[](const JobProgress&) {}, [] { return false; }};
  run_training(spec("j2", 1), env_, hooks);
  auto path = home_ / "models/m-j2/model.pt";
  std::string bytes = read_file(path, 1u << 30);
  write_file_atomic(path, bytes.substr(0, bytes.size() / 2));
  try {
    meta_of("m-j2");
    FAIL() << "a truncated model.pt must not load";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kDataError);
    EXPECT_NE(std::string(e.what()).find("CRC"), std::string::npos) << e.what();
  }
  try {
    meta_of("never-trained");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
}

// Stop mid-epoch 2 (as SIGTERM does), resume from the checkpoint, and land on the same
// weights' metrics as a run that was never interrupted.
TEST_F(TrainingTest, StopAndResumeReproducesAnUninterruptedRun) {
  TrainingHooks plain{[](const JobProgress&) {}, [] { return false; }};
  ASSERT_EQ(run_training(spec("whole", 3), env_, plain), TrainingOutcome::kCompleted);

  int batches = 0;
  TrainingHooks stopping{[](const JobProgress&) {}, [&] { return ++batches > 18; }};
  JobSpec s = spec("parts", 3);
  ASSERT_EQ(run_training(s, env_, stopping), TrainingOutcome::kStopped);
  EXPECT_EQ(meta_of("m-parts").epochs.size(), 1u) << "stopped during epoch 2";
  ASSERT_EQ(run_training(s, env_, plain), TrainingOutcome::kCompleted);

  ModelMeta whole = meta_of("m-whole");
  ModelMeta parts = meta_of("m-parts");
  ASSERT_EQ(parts.epochs.size(), 3u);
  EXPECT_NEAR(parts.epochs[2].test_loss, whole.epochs[2].test_loss, 1e-4);
  EXPECT_NEAR(parts.epochs[2].accuracy, whole.epochs[2].accuracy, 1e-9);
}

// A sweep's rungs: a job that stops after epoch 1 of 3, then a second job of the same model
// that carries on from the first one's checkpoint to epoch 3, land where one 3-epoch run does
// (one learning-rate schedule across the rungs); the first job's files stay as they were.
TEST_F(TrainingTest, APromotedJobCarriesOnFromItsLastRungLikeOneRun) {
  TrainingHooks plain{[](const JobProgress&) {}, [] { return false; }};
  ASSERT_EQ(run_training(spec("whole", 3), env_, plain), TrainingOutcome::kCompleted);

  JobSpec rung0 = spec("t0", 3);
  rung0.model_id = "m-rungs";
  rung0.stop_after_epoch = 1;
  std::vector<JobProgress> reports;
  TrainingHooks recording{[&](const JobProgress& p) { reports.push_back(p); }, [] { return false; }};
  ASSERT_EQ(run_training(rung0, env_, recording), TrainingOutcome::kCompleted);
  EXPECT_EQ(meta_of("m-rungs").epochs.size(), 1u);
  ASSERT_FALSE(reports.empty());
  EXPECT_DOUBLE_EQ(reports.back().fraction, 1.0) << "the job's own end, not the schedule's";
  const auto rung0_checkpoint = read_file(home_ / "jobs/t0/checkpoint.pt", 64u << 20);

  JobSpec rung1 = spec("t0-r1", 3);
  rung1.model_id = "m-rungs";
  rung1.resume_from = "t0";
  ASSERT_EQ(run_training(rung1, env_, plain), TrainingOutcome::kCompleted);
  ModelMeta whole = meta_of("m-whole");
  ModelMeta rungs = meta_of("m-rungs");
  ASSERT_EQ(rungs.epochs.size(), 3u) << "the history carries on";
  EXPECT_EQ(rungs.job_id, "t0-r1");
  EXPECT_NEAR(rungs.epochs[2].test_loss, whole.epochs[2].test_loss, 1e-4);
  EXPECT_NEAR(rungs.epochs[2].accuracy, whole.epochs[2].accuracy, 1e-9);
  EXPECT_EQ(read_file(home_ / "jobs/t0/checkpoint.pt", 64u << 20), rung0_checkpoint);

  JobSpec orphan = spec("t1-r1", 3);
  orphan.resume_from = "never-ran";
  EXPECT_THROW(run_training(orphan, env_, plain), Error) << "no checkpoint to carry on from: no silent fresh start";
}

// A stop during an epoch's evaluation (SIGTERM while a big test split is scored) comes at the
// next evaluation batch; the checkpoint keeps the trained epoch, so the resume evaluates it and
// trains on from the next one, landing where an uninterrupted run does.
TEST_F(TrainingTest, AStopDuringTheEvaluationKeepsTheTrainedEpoch) {
  write_bar_mnist(data_.path(), 200, 200);  // 13 steps an epoch; a test split of 2 evaluation batches (of 128)
  TrainingHooks plain{[](const JobProgress&) {}, [] { return false; }};
  ASSERT_EQ(run_training(spec("whole", 3), env_, plain), TrainingOutcome::kCompleted);

  // Epoch 1: 13 steps and a poll between its 2 evaluation batches; epoch 2: 13 steps, then
  // the poll of its evaluation (the 28th) says stop.
  int polls = 0;
  TrainingHooks stopping{[](const JobProgress&) {}, [&] { return ++polls >= 28; }};
  JobSpec s = spec("parts", 3);
  ASSERT_EQ(run_training(s, env_, stopping), TrainingOutcome::kStopped);
  EXPECT_EQ(polls, 28);
  EXPECT_EQ(meta_of("m-parts").epochs.size(), 1u) << "epoch 2 was not published before its evaluation ended";

  polls = 0;
  TrainingHooks counting{[](const JobProgress&) {},
                         [&] {
                           ++polls;
                           return false;
                         }};
  ASSERT_EQ(run_training(s, env_, counting), TrainingOutcome::kCompleted);
  EXPECT_EQ(polls, 1 + 13 + 1) << "epoch 2's evaluation, then epoch 3; epoch 2 was not trained again";

  ModelMeta whole = meta_of("m-whole");
  ModelMeta parts = meta_of("m-parts");
  ASSERT_EQ(parts.epochs.size(), 3u);
  for (std::size_t e = 0; e < 3; ++e) {
    EXPECT_EQ(parts.epochs[e].epoch, static_cast<int>(e) + 1);
    EXPECT_NEAR(parts.epochs[e].train_loss, whole.epochs[e].train_loss, 1e-4) << "epoch " << e + 1;
    EXPECT_NEAR(parts.epochs[e].test_loss, whole.epochs[e].test_loss, 1e-4) << "epoch " << e + 1;
    EXPECT_NEAR(parts.epochs[e].accuracy, whole.epochs[e].accuracy, 1e-9) << "epoch " << e + 1;
  }
}

// A crash in the middle of writing checkpoint.pt leaves a torn file: it is detected by its
// seal (length and CRC) and the previous checkpoint is used instead.
TEST_F(TrainingTest, ATruncatedCheckpointFallsBackToThePreviousOne) {
  // 200 examples in batches of 16: 13 steps an epoch. Stop at epoch 2 step 5: checkpoint.pt
  // then says (epoch 2, step 5) and checkpoint.prev.pt, written after epoch 1, (epoch 2, step 0).
  JobSpec s = spec("torn", 3);
  int calls = 0;
  TrainingHooks stop_in_epoch_2{[](const JobProgress&) {}, [&] { return ++calls > 18; }};
  ASSERT_EQ(run_training(s, env_, stop_in_epoch_2), TrainingOutcome::kStopped);
  auto path = home_ / "jobs/torn/checkpoint.pt";
  ASSERT_TRUE(std::filesystem::exists(home_ / "jobs/torn/checkpoint.prev.pt"));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);

  int batches = 0;
  TrainingHooks count{[](const JobProgress&) {},
                      [&] {
                        ++batches;
                        return false;
                      }};
  ASSERT_EQ(run_training(s, env_, count), TrainingOutcome::kCompleted);
  EXPECT_EQ(batches, 26) << "resumed from the previous checkpoint: epochs 2 and 3 whole (21 would mean the "
                            "torn file was used, 39 a start from scratch)";
  EXPECT_EQ(meta_of("m-torn").epochs.size(), 3u);
}

// Fencing: once a later attempt of a job has started, an older attempt writes nothing more.
TEST_F(TrainingTest, AnOlderAttemptIsFencedOff) {
  TrainingHooks plain{[](const JobProgress&) {}, [] { return false; }};
  JobSpec later = spec("fenced", 1);
  later.attempt = 2;
  ASSERT_EQ(run_training(later, env_, plain), TrainingOutcome::kCompleted);
  JobSpec stale = later;
  stale.attempt = 1;
  try {
    run_training(stale, env_, plain);
    FAIL() << "a stale attempt must not train over a newer one";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSuperseded);  // was kConflict: the code is specific now
    EXPECT_NE(std::string(e.what()).find("superseded"), std::string::npos) << e.what();
  }
  EXPECT_EQ(meta_of("m-fenced").epochs.size(), 1u);
}

// TRAIN_AMP: bf16 autocast and channels-last on a GPU with fast bf16; TRAIN_CPU_CHANNELS_LAST:
// channels-last on the CPU, never autocast there. Neither for a data-parallel rank or the mlp.
TEST(FastPath, DefaultsPerDeviceAndNoChannelsLastForADataParallelRankOrTheMlp) {
  const JobSpec one = parse_job_spec({{"job_id", "j"}, {"model_id", "m"}});
  const JobSpec shared = [&] {
    JobSpec s = one;
    s.placement = Placement{};
    s.placement->world_size = 2;
    return s;
  }();
  const torch::Device cuda(torch::kCUDA), cpu(torch::kCPU);
  const JobSpec mlp = parse_job_spec({{"job_id", "j"}, {"model_id", "m"}, {"model_type", "mlp"}});
  const TrainingEnv defaults;
  EXPECT_TRUE(defaults.cuda_fast_path) << "TRAIN_AMP is on by default";
  EXPECT_TRUE(defaults.cpu_channels_last) << "TRAIN_CPU_CHANNELS_LAST is on by default";
  TrainingEnv off;
  off.cuda_fast_path = false;
  off.cpu_channels_last = false;
  TrainingEnv cl_cpu;
  cl_cpu.cuda_fast_path = false;
  for (const JobSpec* s : {&one, &shared, &mlp}) {
    for (bool bf16 : {true, false}) {
      for (const TrainingEnv* env : std::initializer_list<const TrainingEnv*>{&defaults, &off, &cl_cpu}) {
        EXPECT_FALSE(fast_path_for(*env, cpu, *s, bf16).amp) << "never autocast on the CPU";
        EXPECT_FALSE(fast_path_for(*env, cpu, *s, bf16).gpu_lacks_bf16);
      }
      EXPECT_FALSE(fast_path_for(off, cpu, *s, bf16).channels_last);
      EXPECT_FALSE(fast_path_for(off, cuda, *s, bf16).amp) << "TRAIN_AMP=0 turns it off";
      EXPECT_FALSE(fast_path_for(off, cuda, *s, bf16).channels_last);
      EXPECT_FALSE(fast_path_for(off, cuda, *s, bf16).gpu_lacks_bf16);
    }
    EXPECT_TRUE(fast_path_for(defaults, cuda, *s, true).amp);
    EXPECT_FALSE(fast_path_for(defaults, cuda, *s, false).amp) << "a GPU without fast bf16 trains in fp32";
    EXPECT_FALSE(fast_path_for(defaults, cuda, *s, false).channels_last);
    EXPECT_TRUE(fast_path_for(defaults, cuda, *s, false).gpu_lacks_bf16);
  }
  EXPECT_TRUE(fast_path_for(defaults, cuda, one, true).channels_last);
  EXPECT_FALSE(fast_path_for(defaults, cuda, shared, true).channels_last);
  EXPECT_FALSE(fast_path_for(defaults, cuda, mlp, true).channels_last);
  EXPECT_TRUE(fast_path_for(defaults, cuda, mlp, true).amp);
  EXPECT_TRUE(fast_path_for(defaults, cpu, one, false).channels_last);
  EXPECT_TRUE(fast_path_for(cl_cpu, cpu, one, false).channels_last) << "TRAIN_AMP=0 leaves the CPU's layout";
  EXPECT_FALSE(fast_path_for(cl_cpu, cuda, one, true).channels_last);
  EXPECT_FALSE(fast_path_for(defaults, cpu, shared, false).channels_last) << "a data-parallel rank keeps NCHW";
  EXPECT_FALSE(fast_path_for(defaults, cpu, mlp, false).channels_last) << "no convolutions";
  // This process's GPU, through LibTorch's CUDA hooks: without CUDA, no bf16.
  const FastPath own = fast_path_for(defaults, cuda, one);
  if (best_device() == "cpu") {
    EXPECT_FALSE(own.amp);
    EXPECT_TRUE(own.gpu_lacks_bf16);
  } else {
    std::cout << "this GPU: bf16 autocast " << (own.amp ? "on" : "off (no fast bf16)") << "\n";
  }
}

// One channel: NCHW and channels-last both call the bytes contiguous; the strides decide.
TEST(FastPath, InLayoutGivesTheStridesAsked) {
  const auto nchw = torch::rand({4, 1, 6, 5});
  const auto cl = in_layout(nchw, true);
  EXPECT_EQ(cl.suggest_memory_format(), torch::MemoryFormat::ChannelsLast);
  EXPECT_EQ(cl.stride(1), 1);
  EXPECT_TRUE(torch::equal(cl, nchw));
  const auto back = in_layout(cl, false);
  EXPECT_EQ(back.suggest_memory_format(), torch::MemoryFormat::Contiguous);
  EXPECT_EQ(back.strides(), nchw.strides());
  EXPECT_TRUE(torch::equal(back, nchw));
  EXPECT_EQ(in_layout(nchw, false).data_ptr(), nchw.data_ptr()) << "no copy when already so";
  const auto rgb = torch::rand({2, 3, 4, 4});
  EXPECT_TRUE(in_layout(rgb, true).is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::equal(in_layout(rgb, true), rgb));
}

TEST_F(TrainingTest, CudaWhereThereIsNoneFailsWithThatMessage) {
  if (best_device() == "cuda") GTEST_SKIP() << "this machine has a GPU";
  JobSpec s = spec("j3", 1);
  s.train_opts.device = TrainDevice::kCuda;
  try {
    run_training(s, env_, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlswarm
