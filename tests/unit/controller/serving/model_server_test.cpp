// The batcher and the model cache on their own: models written here (untrained, as a trainer
// writes them: model.pt and meta.json), real forward passes, no HTTP.

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "batcher.h"
#include "loaded_model.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/model_meta.h"
#include "mlswarm/torch/mapped_tensors.h"
#include "mlswarm/torch/model_zoo.h"
#include "model_cache.h"
#include "../../../support/temp_dir.h"

namespace mlswarm {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using testing::TempDir;

/// Writes HOME/models/<id>/ as a trainer does (model.pt first, then meta.json), at `version`;
/// meta.json's time is moved a second on each write, so that a rewrite within the file
/// system's clock tick is still seen as new. `corrupt`: a model.pt that does not match.
void write_model(const fs::path& home, const std::string& id, int version, ModelType type = ModelType::kMlp,
                 int side = 28, bool corrupt = false) {
  torch::manual_seed(version);
  auto model = make_model(type, 1, side, side, 10);
  std::string bytes = save_module(model);
  ModelMeta meta;
  meta.model_id = id;
  meta.model_type = type;
  meta.dataset = "mnist";
  for (int k = 0; k < 10; ++k) meta.class_names.push_back("class" + std::to_string(k));
  meta.height = meta.width = side;
  meta.mean = {0.5};
  meta.std = {0.25};
  meta.version = version;
  meta.epochs.push_back({version, 0.5, 0.5, 0.5, 100, 1});
  meta.model_crc32 = crc32_of(bytes) + (corrupt ? 1 : 0);
  const auto dir = home / "models" / id;
  write_file_atomic(dir / "model.pt", bytes);
  const fs::path meta_path = dir / "meta.json";
  std::error_code ec;
  const auto before = fs::last_write_time(meta_path, ec);
  write_file_atomic(meta_path, to_json(meta).dump());
  if (!ec) fs::last_write_time(meta_path, before + std::chrono::seconds(1));
}

std::vector<float> random_pixels(std::int64_t count, int side = 28) {
  auto t = torch::rand({count * side * side});
  return {t.data_ptr<float>(), t.data_ptr<float>() + t.numel()};
}

template <typename Predicate>
bool poll(Predicate done, milliseconds deadline = milliseconds(20000)) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

ModelCacheOptions cache_options(std::size_t memory_bytes = 0) {
  ModelCacheOptions o;
  o.recheck = milliseconds(0);  // every get() looks at meta.json
  o.memory_bytes = memory_bytes;
  return o;
}

BatchingOptions batching(int workers = 2, int max_batch = 0) {
  BatchingOptions o;
  o.workers = workers;
  o.threads = 1;
  o.max_batch = max_batch;
  o.device = "cpu";
  return o;
}

TEST(Batcher, EachRequestGetsItsOwnRowsWhateverItIsBatchedWith) {
  TempDir home;
  write_model(home.path(), "m", 1);
  ModelCache cache(home.path(), cache_options());
  auto model = cache.get("m");
  std::vector<std::vector<float>> inputs;
  std::vector<PredictResult> alone;
  {
    Batcher one(batching(1, 1));  // a pass per request: the reference
    for (int i = 0; i < 24; ++i) {
      inputs.push_back(random_pixels(1 + i % 3));
      alone.push_back(one.predict(model, inputs.back(), 1 + i % 3));
    }
  }
  Batcher batcher(batching());
  std::vector<std::future<PredictResult>> answers;
  for (int i = 0; i < 24; ++i) {
    answers.push_back(std::async(std::launch::async, [&, i] { return batcher.predict(model, inputs[i], 1 + i % 3); }));
  }
  for (int i = 0; i < 24; ++i) {
    PredictResult got = answers[i].get();
    ASSERT_EQ(got.probabilities.size(), alone[i].probabilities.size()) << i;
    EXPECT_EQ(got.model_id, "m");
    EXPECT_EQ(got.version, 1);
    EXPECT_EQ(got.class_idxs, alone[i].class_idxs) << i;
    for (std::size_t r = 0; r < got.probabilities.size(); ++r) {
      for (std::size_t k = 0; k < 10; ++k) EXPECT_NEAR(got.probabilities[r][k], alone[i].probabilities[r][k], 1e-4);
    }
  }
  EXPECT_EQ(batcher.stats().requests, 24U);
  EXPECT_LE(batcher.stats().batches, 24U);
}

TEST(Batcher, AWrongShapeIsRefusedAndAFailedPassFailsOnlyItsOwnRequests) {
  TempDir home;
  write_model(home.path(), "good", 1);
  ModelCache cache(home.path(), cache_options());
  auto good = cache.get("good");
  // The same weights under a meta that says 2x2 images: its forward pass throws.
  auto broken = std::make_shared<LoadedModel>(*good);
  broken->meta.model_id = "broken";
  broken->meta.height = broken->meta.width = 2;
  Batcher batcher(batching());
  try {
    batcher.predict(good, random_pixels(1, 27), 1);
    FAIL() << "a wrong shape was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  auto bad = std::async(std::launch::async, [&] { return batcher.predict(broken, random_pixels(2, 2), 2); });
  auto fine = std::async(std::launch::async, [&] { return batcher.predict(good, random_pixels(1), 1); });
  try {
    bad.get();
    FAIL() << "a failed pass answered";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInternal);
    EXPECT_NE(std::string(e.what()).find("forward pass failed"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fine.get().class_idxs.size(), 1U);
}

TEST(Batcher, ShutdownAnswersEveryRequestQueued) {
  TempDir home;
  write_model(home.path(), "m", 1, ModelType::kConvnet);
  ModelCache cache(home.path(), cache_options());
  auto model = cache.get("m");
  std::vector<std::future<PredictResult>> answers;
  {
    Batcher batcher(batching(1, 2));
    for (int i = 0; i < 40; ++i) {
      answers.push_back(std::async(std::launch::async, [&] { return batcher.predict(model, random_pixels(1), 1); }));
    }
    // Destroyed with requests still queued (40 on one worker, 2 at a time): they are answered.
    ASSERT_TRUE(poll([&] { return batcher.queued() + batcher.stats().requests == 40; }));
  }
  for (auto& a : answers) EXPECT_EQ(a.get().class_idxs.size(), 1U);
}

TEST(Batcher, AModelWithAQueueDoesNotHoldTheWorkersFromAnother) {
  TempDir home;
  write_model(home.path(), "slow", 1, ModelType::kResnet, 64);
  write_model(home.path(), "fast", 1);
  ModelCache cache(home.path(), cache_options());
  auto slow = cache.get("slow");
  auto fast = cache.get("fast");
  Batcher batcher(batching(1, 2));  // one worker, two examples a pass
  std::vector<std::future<PredictResult>> slow_answers;
  for (int i = 0; i < 40; ++i) {
    slow_answers.push_back(
        std::async(std::launch::async, [&] { return batcher.predict(slow, random_pixels(1, 64), 1); }));
  }
  ASSERT_TRUE(poll([&] { return batcher.queued() >= 30; }));
  batcher.predict(fast, random_pixels(1), 1);
  // Round-robin: the fast model's request waited for at most the pass running and one more of
  // the slow model's (2 examples each), not for its whole queue: of the slow requests, the 10 or
  // fewer taken before it came and 4 more at most were taken before it (all 40, first in first out).
  EXPECT_LE(batcher.stats().requests - 1, 40U - 30U + 4U);
  for (auto& a : slow_answers) a.get();
}

/// `base`'s weights under another id, whose every forward pass takes at least `cost` per
/// example and then waits until `gate` opens.
std::shared_ptr<const LoadedModel> gated_copy(const LoadedModel& base, const std::string& id,
                                              std::shared_future<void> gate, milliseconds cost = milliseconds(0)) {
  auto gated = std::make_shared<LoadedModel>(base);
  gated->meta.model_id = id;
  gated->model = torch::nn::Sequential(torch::nn::Functional([gate, cost, inner = base.model](torch::Tensor x) mutable {
    std::this_thread::sleep_for(cost * x.size(0));  // the pass's cost, not a synchronisation
    gate.wait();
    return inner->forward(x);
  }));
  return gated;
}

std::shared_future<void> opened() {
  std::promise<void> p;
  p.set_value();
  return p.get_future().share();
}

TEST(Batcher, AHeavyModelCannotHoldEveryWorkerWhileALightOneIsActive) {
  TempDir home;
  write_model(home.path(), "fast", 1);
  ModelCache cache(home.path(), cache_options());
  auto fast = cache.get("fast");
  std::promise<void> open;
  auto heavy_once = gated_copy(*fast, "slow", opened(), milliseconds(20));  // 20 ms an example
  auto slow = gated_copy(*fast, "slow", open.get_future().share());
  BatchingOptions options = batching(2, 1);  // two workers, one example a pass
  options.active_window = milliseconds(60000);
  Batcher batcher(options);
  batcher.predict(fast, random_pixels(1), 1);        // "fast" is active from now on, and light
  batcher.predict(heavy_once, random_pixels(1), 1);  // "slow" is known to be heavy
  std::vector<std::future<PredictResult>> slow_answers;
  for (int i = 0; i < 4; ++i) {
    slow_answers.push_back(std::async(std::launch::async, [&] { return batcher.predict(slow, random_pixels(1), 1); }));
  }
  // One worker holds a slow pass (stuck at the gate); the other is kept for "fast". The gate
  // opens before any check ends the test: the slow requests must be answered either way.
  const bool one_slow_pass = poll([&] { return batcher.queued() == 3; }, milliseconds(10000));
  auto fast_answer = std::async(std::launch::async, [&] { return batcher.predict(fast, random_pixels(1), 1); });
  const bool answered = fast_answer.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  const std::size_t queued = batcher.queued();
  open.set_value();
  EXPECT_TRUE(one_slow_pass) << queued << " queued";
  EXPECT_TRUE(answered) << "the light model waited behind the heavy one's passes";
  EXPECT_EQ(fast_answer.get().model_id, "fast");
  for (auto& a : slow_answers) EXPECT_EQ(a.get().model_id, "slow");
}

TEST(Batcher, ModelsAlikeShareEveryWorker) {
  // A stable and its candidate: as costly as each other, neither keeps a worker from the other.
  TempDir home;
  write_model(home.path(), "fast", 1);
  ModelCache cache(home.path(), cache_options());
  auto fast = cache.get("fast");
  std::promise<void> open;
  auto stable = gated_copy(*fast, "stable", open.get_future().share(), milliseconds(20));
  BatchingOptions options = batching(2, 1);
  options.active_window = milliseconds(60000);
  Batcher batcher(options);
  // 20 ms an example each: the machine's noise does not make one 4 times the other.
  auto candidate = gated_copy(*fast, "candidate", opened(), milliseconds(20));
  auto stable_once = gated_copy(*fast, "stable", opened(), milliseconds(20));
  batcher.predict(candidate, random_pixels(1), 1);  // active, and as light as "stable"
  batcher.predict(stable_once, random_pixels(1), 1);
  std::vector<std::future<PredictResult>> answers;
  for (int i = 0; i < 4; ++i) {
    answers.push_back(std::async(std::launch::async, [&] { return batcher.predict(stable, random_pixels(1), 1); }));
  }
  // Both workers take "stable" passes (they wait at the gate only as long as this poll).
  const bool both_workers = poll([&] { return batcher.queued() == 2; }, milliseconds(10000));
  const std::size_t queued = batcher.queued();
  open.set_value();
  EXPECT_TRUE(both_workers) << queued << " queued";
  for (auto& a : answers) EXPECT_EQ(a.get().model_id, "stable");
}

TEST(Batcher, OnOneWorkerAHeavyModelIsStillServedBesideALightOne) {
  TempDir home;
  write_model(home.path(), "fast", 1);
  ModelCache cache(home.path(), cache_options());
  auto fast = cache.get("fast");
  auto heavy = gated_copy(*fast, "slow", opened(), milliseconds(20));
  std::future<PredictResult> heavy_answer;  // destroyed after the batcher, which answers it when it stops
  BatchingOptions options = batching(1, 1);
  options.active_window = milliseconds(60000);
  Batcher batcher(options);
  batcher.predict(fast, random_pixels(1), 1);   // light and active
  batcher.predict(heavy, random_pixels(1), 1);  // known to be heavy
  heavy_answer = std::async(std::launch::async, [&] { return batcher.predict(heavy, random_pixels(1), 1); });
  // Nothing of "slow" runs: the one worker is its to take, whatever "fast" may need.
  ASSERT_EQ(heavy_answer.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "the heavy model starved beside an idle light one";
  EXPECT_EQ(heavy_answer.get().model_id, "slow");
}

TEST(Batcher, AModelAloneHasEveryWorker) {
  TempDir home;
  write_model(home.path(), "fast", 1);
  ModelCache cache(home.path(), cache_options());
  auto fast = cache.get("fast");
  std::promise<void> open;
  auto slow = gated_copy(*fast, "slow", open.get_future().share());
  BatchingOptions options = batching(2, 1);
  options.active_window = milliseconds(0);  // "fast", answered before, no longer counts
  Batcher batcher(options);
  batcher.predict(fast, random_pixels(1), 1);
  std::vector<std::future<PredictResult>> slow_answers;
  for (int i = 0; i < 4; ++i) {
    slow_answers.push_back(std::async(std::launch::async, [&] { return batcher.predict(slow, random_pixels(1), 1); }));
  }
  const bool both_workers = poll([&] { return batcher.queued() == 2; }, milliseconds(10000));  // two at the gate
  const std::size_t queued = batcher.queued();
  open.set_value();
  EXPECT_TRUE(both_workers) << queued << " queued";
  for (auto& a : slow_answers) EXPECT_EQ(a.get().model_id, "slow");
}

TEST(ModelCache, ANewVersionServesOnlyOnceLoadedAndWarmAndTheOldOneAnswersMeanwhile) {
  TempDir home;
  write_model(home.path(), "m", 1, ModelType::kConvnet);
  ModelCacheOptions options = cache_options();
  std::atomic<int> warmed{0};
  options.warm_sizes = [&](const std::string& id) {
    EXPECT_EQ(id, "m");
    std::this_thread::sleep_for(milliseconds(200));  // a slow warm-up: requests meanwhile get version 1
    ++warmed;
    return std::vector<int>{1, 4};
  };
  ModelCache cache(home.path(), options);
  EXPECT_EQ(cache.get("m")->meta.version, 1);  // the first load is the request's own (nothing to serve before)
  EXPECT_EQ(warmed, 1);
  write_model(home.path(), "m", 2, ModelType::kConvnet);
  EXPECT_EQ(cache.get("m")->meta.version, 1) << "the request that noticed version 2 waited for its load";
  EXPECT_FALSE(cache.settled());
  int seen_v1_while_loading = 0;
  ASSERT_TRUE(poll([&] {
    auto m = cache.get("m");
    if (m->meta.version == 1) ++seen_v1_while_loading;
    return m->meta.version == 2;
  }));
  EXPECT_EQ(warmed, 2) << "version 2 answered before its warm-up ran";
  EXPECT_GT(seen_v1_while_loading, 0);
  EXPECT_TRUE(poll([&] { return cache.settled(); }));
  EXPECT_EQ(cache.stats().loads, 2U);
}

TEST(ModelCache, ANewVersionThatDoesNotLoadLeavesTheOldOneServingAndIsNotRetried) {
  TempDir home;
  write_model(home.path(), "m", 1);
  ModelCache cache(home.path(), cache_options());
  EXPECT_EQ(cache.get("m")->meta.version, 1);
  write_model(home.path(), "m", 2, ModelType::kMlp, 28, /*corrupt=*/true);
  EXPECT_EQ(cache.get("m")->meta.version, 1);
  ASSERT_TRUE(poll([&] { return cache.settled(); }));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(cache.get("m")->meta.version, 1);
  EXPECT_TRUE(cache.settled()) << "the broken version was queued again";
  EXPECT_EQ(cache.stats().loads, 1U);
  write_model(home.path(), "m", 3);  // a good one after it is taken
  EXPECT_TRUE(poll([&] { return cache.get("m")->meta.version == 3; }));
}

TEST(ModelCache, TheMemoryBoundUnloadsTheLeastRecentlyUsedButNeverOneARequestHolds) {
  TempDir home;
  for (const char* id : {"a", "b", "c", "d"}) write_model(home.path(), id, 1);
  std::size_t one = 0;
  {
    ModelCache probe(home.path(), cache_options());
    probe.get("a");
    one = probe.stats().bytes;
  }
  ASSERT_GT(one, 0U);
  ModelCache cache(home.path(), cache_options(one * 5 / 2));  // room for two
  auto held = cache.get("a");
  cache.get("b");
  cache.get("c");  // over the bound: b goes (a is held, c is the one just loaded)
  EXPECT_EQ(cache.stats().unloads, 1U);
  EXPECT_EQ(cache.stats().loaded, 2U);
  EXPECT_LE(cache.stats().bytes, one * 5 / 2);
  EXPECT_EQ(cache.get("a"), held) << "a version a request holds was unloaded";
  held.reset();
  cache.get("c");
  cache.get("d");  // now a is the least recently used that nothing holds
  EXPECT_EQ(cache.stats().unloads, 2U);
  EXPECT_EQ(cache.stats().loads, 4U);
  cache.get("c");
  EXPECT_EQ(cache.stats().loads, 4U) << "c was still loaded";
  cache.get("a");
  EXPECT_EQ(cache.stats().loads, 5U) << "a was unloaded, so it loads again";
}

// Room is made before a first load, for about its checkpoint's size: the bound holds while it
// loads too (seen from outside as the unload that comes even when the load then fails).
TEST(ModelCache, AFirstLoadMakesRoomBeforeItBegins) {
  TempDir home;
  for (const char* id : {"a", "b"}) write_model(home.path(), id, 1);
  write_model(home.path(), "broken", 1, ModelType::kMlp, 28, /*corrupt=*/true);
  std::size_t one = 0;
  {
    ModelCache probe(home.path(), cache_options());
    probe.get("a");
    one = probe.stats().bytes;
  }
  ModelCache cache(home.path(), cache_options(one * 5 / 2));  // room for two
  cache.get("a");
  cache.get("b");
  EXPECT_EQ(cache.stats().unloads, 0U);
  EXPECT_THROW(cache.get("broken"), std::exception);
  EXPECT_EQ(cache.stats().unloads, 1U) << "no room was made before the load began";
  EXPECT_EQ(cache.stats().loaded, 1U);
  EXPECT_LE(cache.stats().bytes + one, one * 5 / 2);
}

TEST(ModelCache, AVersionsWeightsLieInMappingsOfTheirOwnGivenBackWholeWhenItIsUnloaded) {
  TempDir home;
  write_model(home.path(), "a", 1);
  write_model(home.path(), "b", 1, ModelType::kMlp, 48);  // about 2.7 times a's weights
  ModelCache cache(home.path(), cache_options(1));        // room for one version
  const std::size_t before = mapped_tensor_bytes();
  const std::size_t a_bytes = cache.get("a")->bytes;
  const std::size_t with_a = mapped_tensor_bytes();
  EXPECT_GE(with_a, before + a_bytes / 2) << "the weights it keeps are not in mappings of their own";
  const std::size_t b_bytes = cache.get("b")->bytes;  // "a" is unloaded to make room
  EXPECT_EQ(cache.stats().loaded, 1U);
  const std::size_t with_b = mapped_tensor_bytes();
  EXPECT_GE(with_b, before + b_bytes / 2) << "b's weights are not in mappings of their own";
  EXPECT_LE(with_b, before + b_bytes + (std::size_t{64} << 10)) << "a's mappings were not given back";
}

}  // namespace
}  // namespace mlswarm
