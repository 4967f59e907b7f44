#include "placement.h"

#include <gtest/gtest.h>

namespace mlswarm {
namespace {

TEST(Scheduler, PicksTheTrainerWithTheMostFreeCapacity) {
  EXPECT_EQ(choose_trainer({{"a:1", 2, 1}, {"b:1", 4, 1}, {"c:1", 1, 0}}), "b:1");
}

TEST(Scheduler, TiesGoToTheLeastBusyThenTheLowestAddress) {
  EXPECT_EQ(choose_trainer({{"b:1", 2, 1}, {"a:1", 1, 0}}), "a:1");
  EXPECT_EQ(choose_trainer({{"b:1", 1, 0}, {"a:1", 1, 0}}), "a:1");
}

TEST(Scheduler, NoFreeWorkerMeansTheJobWaits) {
  EXPECT_FALSE(choose_trainer({}));
  EXPECT_FALSE(choose_trainer({{"a:1", 1, 1}, {"b:1", 2, 3}, {"c:1", 0, 0}}));
}

// Dispatching in a loop while counting each choice as busy spreads jobs over trainers.
TEST(Scheduler, SuccessiveChoicesSpreadJobs) {
  std::vector<TrainerLoad> loads = {{"a:1", 1, 0}, {"b:1", 1, 0}, {"c:1", 1, 0}};
  std::vector<std::string> chosen;
  while (auto c = choose_trainer(loads)) {
    chosen.push_back(*c);
    for (auto& l : loads) l.busy += l.address == *c ? 1 : 0;
  }
  EXPECT_EQ(chosen, (std::vector<std::string>{"a:1", "b:1", "c:1"}));
}

}  // namespace
}  // namespace mlswarm
