// A job's checkpoints without LibTorch: sealed, rotated, fenced and offered newest first.

#include "checkpoint_store.h"

#include <gtest/gtest.h>

#include <fstream>

#include "../../support/temp_dir.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using testing::TempDir;

std::vector<std::string> offered(const CheckpointStore& store, const std::string& accept = "") {
  std::vector<std::string> seen;
  store.resume([&](const std::string& payload, const std::string&) {
    seen.push_back(payload);
    return payload == accept;
  });
  return seen;
}

TEST(CheckpointStore, KeepsThePreviousCheckpointAndOffersTheNewestFirst) {
  TempDir dir;
  CheckpointStore store(dir / "jobs" / "j1", 1);
  store.claim();
  EXPECT_TRUE(offered(store).empty()) << "nothing to resume yet";
  store.save("epoch-1");
  store.save("epoch-2");
  EXPECT_EQ(offered(store), (std::vector<std::string>{"epoch-2", "epoch-1"}));
  EXPECT_EQ(offered(store, "epoch-2"), (std::vector<std::string>{"epoch-2"})) << "stops at the first accepted";
  EXPECT_EQ(read_file(dir / "jobs" / "j1" / "checkpoint.pt", 1 << 20), seal("epoch-2")) << "sealed on disk";
}

TEST(CheckpointStore, ATornOrCorruptCheckpointFallsBackToThePreviousOne) {
  TempDir dir;
  CheckpointStore store(dir / "jobs" / "j1", 1);
  store.claim();
  store.save("epoch-1");
  store.save("epoch-2");
  std::string sealed = read_file(store.checkpoint_path(), 1 << 20);
  std::ofstream(store.checkpoint_path(), std::ios::binary | std::ios::trunc) << sealed.substr(0, sealed.size() - 3);
  EXPECT_EQ(offered(store), (std::vector<std::string>{"epoch-1"}));
  // A payload its user cannot read (it throws) is passed over too.
  std::vector<std::string> seen;
  EXPECT_FALSE(store.resume([&](const std::string& payload, const std::string&) -> bool {
    seen.push_back(payload);
    throw Error(ErrorCode::kDataError, "not a checkpoint of ours");
  }));
  EXPECT_EQ(seen, std::vector<std::string>{"epoch-1"});
}

TEST(CheckpointStore, ALaterAttemptFencesOffEveryWriteOfAnEarlierOne) {
  TempDir dir;
  CheckpointStore first(dir / "jobs" / "j1", 1);
  first.claim();
  first.save("attempt-1");
  CheckpointStore second(dir / "jobs" / "j1", 2);
  second.claim();
  bool model_written = false;
  try {
    first.publish([&] { model_written = true; }, "late");
    FAIL() << "a stale attempt published";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSuperseded);
  }
  EXPECT_FALSE(model_written) << "the model files of a stale attempt must not be written";
  EXPECT_THROW(first.save("late"), Error);
  EXPECT_EQ(offered(second), std::vector<std::string>{"attempt-1"}) << "nothing of the stale attempt landed";
  second.publish([&] { model_written = true; }, "attempt-2");
  EXPECT_TRUE(model_written);
  EXPECT_EQ(offered(second).front(), "attempt-2");
}

}  // namespace
}  // namespace mlswarm
