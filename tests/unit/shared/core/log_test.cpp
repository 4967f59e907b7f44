// Repeated errors log once per interval, and the line that does says how many it stands for
// (issue 38: a full disk logged the election's error every 250 ms).

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "mlswarm/log.h"

namespace mlswarm {
namespace {

using namespace std::chrono_literals;

TEST(LogDue, TheFirstIsLoggedThenOnePerIntervalWithTheCountOfThoseItStandsFor) {
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(log_due("log_test disk full", 1s), 1u) << "the first time a key is seen";
  int quiet = 0;
  for (int i = 0; i < 5; ++i) quiet += log_due("log_test disk full", 1s) == 0 ? 1 : 0;
  const bool within_interval = std::chrono::steady_clock::now() - started < 1s;
  if (within_interval) {
    EXPECT_EQ(quiet, 5) << "repeats within the interval stay quiet";
  }
  EXPECT_EQ(log_due("log_test another key", 1s), 1u) << "keys are counted apart";
  // Waiting out the interval is the behaviour under test, not a synchronisation.
  std::this_thread::sleep_until(started + 1100ms);
  const std::size_t count = log_due("log_test disk full", 1s);
  if (within_interval) {
    EXPECT_EQ(count, 6u) << "the five quiet ones and this one";
  }
  EXPECT_EQ(repeats(count, 1s), " (" + std::to_string(count) + " times in the last 1 s)");
  EXPECT_EQ(repeats(1, 1s), "") << "a single occurrence says nothing more";
  EXPECT_EQ(log_due("log_test disk full", 1s), 0u) << "the interval starts again";
}

}  // namespace
}  // namespace mlswarm
