#include "mlswarm/message_queue.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

namespace mlswarm {
namespace {

TEST(MessageQueue, DeliversInOrderWithSequenceNumbers) {
  MessageQueue<int> queue;
  EXPECT_EQ(queue.push(10), 1u);
  EXPECT_EQ(queue.push(20), 2u);
  auto a = queue.pop();
  auto b = queue.pop();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->first, 1u);
  EXPECT_EQ(a->second, 10);
  EXPECT_EQ(b->second, 20);
}

TEST(MessageQueue, CloseDrainsThenEnds) {
  MessageQueue<int> queue;
  queue.push(1);
  queue.close();
  EXPECT_EQ(queue.push(2), 0u) << "push after close must be refused";
  auto item = queue.pop();
  ASSERT_TRUE(item);
  EXPECT_EQ(item->second, 1);
  EXPECT_FALSE(queue.pop());
}

TEST(MessageQueue, CloseWakesABlockedConsumer) {
  MessageQueue<int> queue;
  std::thread consumer([&] { EXPECT_FALSE(queue.pop()); });
  queue.close();
  consumer.join();
}

// Many producers, one consumer: nothing lost, nothing duplicated, and each producer's
// items arrive in the order it pushed them.
TEST(MessageQueue, ManyProducersLoseNothing) {
  MessageQueue<std::pair<int, int>> queue;
  constexpr int kProducers = 4;
  constexpr int kEach = 5000;
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) queue.push({p, i});
    });
  }
  std::vector<int> next(kProducers, 0);
  std::set<std::uint64_t> seqs;
  for (int n = 0; n < kProducers * kEach; ++n) {
    auto item = queue.pop();
    ASSERT_TRUE(item);
    auto [p, i] = item->second;
    EXPECT_EQ(i, next[p]++);
    seqs.insert(item->first);
  }
  for (auto& t : producers) t.join();
  EXPECT_EQ(seqs.size(), static_cast<std::size_t>(kProducers * kEach));
  EXPECT_EQ(queue.size(), 0u);
}

}  // namespace
}  // namespace mlswarm
