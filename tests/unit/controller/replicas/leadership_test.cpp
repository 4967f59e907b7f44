// The election among controller replicas, two of them in one process on one lease file.

#include "leadership.h"

#include <gtest/gtest.h>

#include "../../../support/temp_dir.h"
#include "../../../support/wait.h"

namespace mlswarm {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::TempDir;

Leadership::Options options(const TempDir& dir, const std::string& address) {
  return {dir.path(), address, std::chrono::milliseconds(300), std::chrono::milliseconds(50)};
}

TEST(Leadership, TheFirstTakesTheLeadAndTheOtherFollows) {
  TempDir dir;
  Leadership a(options(dir, "a:1"));
  Leadership b(options(dir, "b:1"));
  const LeaderView va = a.tick();
  EXPECT_TRUE(va.mine);
  EXPECT_EQ(va.term, 1u);
  const LeaderView vb = b.tick();
  EXPECT_FALSE(vb.mine);
  EXPECT_EQ(vb.leader, "a:1");
  // As long as the leader renews, the follower never takes over.
  for (int i = 0; i < 10; ++i) {
    a.tick();
    EXPECT_FALSE(b.tick().mine);
  }
  EXPECT_TRUE(a.can_lead(1));
  EXPECT_FALSE(b.can_lead(1));
}

TEST(Leadership, AStalledLeaderIsReplacedAndItsWritesAreRefused) {
  TempDir dir;
  Leadership a(options(dir, "a:1"));
  Leadership b(options(dir, "b:1"));
  ASSERT_TRUE(a.tick().mine);
  // `a` stops renewing (paused, its disk stalled): `b` takes over once the lease has run out.
  ASSERT_TRUE(eventually([&] { return b.tick().mine; }, 5s));
  EXPECT_EQ(b.view().term, 2u);
  EXPECT_FALSE(a.can_lead(1)) << "a lease not renewed in time cannot be acted on";
  bool wrote = false;
  EXPECT_FALSE(a.fenced([&] { wrote = true; })) << "a stale leader's write";
  EXPECT_FALSE(wrote);
  EXPECT_TRUE(b.fenced([&] { wrote = true; }));
  EXPECT_TRUE(wrote);
  // When `a` runs its election again it learns it lost, and follows.
  const LeaderView va = a.tick();
  EXPECT_FALSE(va.mine);
  EXPECT_EQ(va.leader, "b:1");
}

TEST(Leadership, AReleasedLeaseIsTakenAtOnce) {
  TempDir dir;
  Leadership a(options(dir, "a:1"));
  Leadership b(options(dir, "b:1"));
  ASSERT_TRUE(a.tick().mine);
  EXPECT_FALSE(b.tick().mine);
  a.release();
  EXPECT_TRUE(b.tick().mine) << "no wait for the lease to run out";
  EXPECT_FALSE(a.can_lead(1));
}

}  // namespace
}  // namespace mlswarm
