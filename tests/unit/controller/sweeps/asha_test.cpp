// ASHA's decisions on hand-made metric sequences, and a whole sweep played against classify.

#include "asha.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <set>
#include <string>

#include <fmt/format.h>

#include "../../../support/error_code.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

const AshaConfig kAsha{.min_epochs = 1, .eta = 3, .max_epochs = 9};  // rungs 1, 3, 9

/// Finished the rungs of `metrics`, not running: paused, stopped or completed.
TrialView at(int trial, std::vector<double> metrics) { return {trial, std::move(metrics), false, false}; }
TrialView running(int trial, std::vector<double> metrics = {}) { return {trial, std::move(metrics), true, false}; }
TrialView failed(int trial, std::vector<double> metrics = {}) { return {trial, std::move(metrics), false, true}; }

std::string describe(const AshaDecision& decision) {
  if (const auto* p = std::get_if<asha::Promote>(&decision))
    return fmt::format("promote {} to rung {}", p->trial, p->rung);
  if (const auto* s = std::get_if<asha::Start>(&decision)) return fmt::format("start {}", s->trial);
  if (std::holds_alternative<asha::Wait>(decision)) return "wait";
  const auto& done = std::get<asha::Done>(decision);
  return done.best_trial ? fmt::format("done, best {}", *done.best_trial) : "done, no best";
}

std::string decide(const std::vector<TrialView>& trials, int max_trials = 9, const AshaConfig& config = kAsha) {
  return describe(next_decision(config, max_trials, trials));
}

TEST(AshaRungs, GeometricWhileBelowRThenR) {
  EXPECT_EQ(rung_epochs({.min_epochs = 1, .eta = 3, .max_epochs = 9}), (std::vector<int>{1, 3, 9}));
  EXPECT_EQ(rung_epochs({.min_epochs = 1, .eta = 3, .max_epochs = 10}), (std::vector<int>{1, 3, 9, 10}));
  EXPECT_EQ(rung_epochs({.min_epochs = 1, .eta = 2, .max_epochs = 16}), (std::vector<int>{1, 2, 4, 8, 16}));
  EXPECT_EQ(rung_epochs({.min_epochs = 2, .eta = 3, .max_epochs = 20}), (std::vector<int>{2, 6, 18, 20}));
  EXPECT_EQ(rung_epochs({.min_epochs = 3, .eta = 4, .max_epochs = 5}), (std::vector<int>{3, 5}));
  EXPECT_EQ(rung_epochs({.min_epochs = 1, .eta = 1000, .max_epochs = 1000}), (std::vector<int>{1, 1000}));
  EXPECT_EQ(rung_epochs({.min_epochs = 5, .eta = 3, .max_epochs = 5}), (std::vector<int>{5})) << "random search";
}

TEST(AshaRungs, RefusesImpossibleConfigs) {
  for (const AshaConfig& bad :
       {AshaConfig{.min_epochs = 0, .eta = 3, .max_epochs = 9}, AshaConfig{.min_epochs = 10, .eta = 3, .max_epochs = 9},
        AshaConfig{.min_epochs = 1, .eta = 1, .max_epochs = 9}}) {
    EXPECT_EQ(testing::thrown_code([&] { rung_epochs(bad); }), ErrorCode::kInvalidArgument);
    EXPECT_EQ(testing::thrown_code([&] { next_decision(bad, 9, {}); }), ErrorCode::kInvalidArgument);
  }
}

TEST(Asha, StartsTrialsUntilEtaOfThemFinishARung) {
  EXPECT_EQ(decide({}), "start 0");
  EXPECT_EQ(decide({running(0)}), "start 1");
  EXPECT_EQ(decide({at(0, {0.5}), at(1, {0.9})}), "start 2") << "2 finished rung 0: floor(2/3) = 0 promotions";
  EXPECT_EQ(decide({at(0, {0.5}), at(1, {0.9}), running(2)}), "start 3");
  EXPECT_EQ(decide({at(0, {0.5}), running(2), at(1, {0.9})}, 9), "start 3") << "ids need not come in order";
  EXPECT_EQ(decide({at(1, {0.5}), running(2)}, 9), "start 0") << "the lowest unused id";
}

TEST(Asha, PromotesTheTopThirdOfRungZero) {
  EXPECT_EQ(decide({at(0, {0.5}), at(1, {0.9}), at(2, {0.7})}), "promote 1 to rung 1");
  EXPECT_EQ(decide({at(0, {0.5}), running(1, {0.9}), at(2, {0.7})}), "start 3") << "1 is on its way; 2 is not top 1/3";
  // 3..5 finish rung 0: 6 finished, the top 2 are 3 (0.95) and 1 (0.9, already promoted).
  const std::vector<TrialView> six{at(0, {0.5}),  running(1, {0.9}), at(2, {0.7}),
                                   at(3, {0.95}), at(4, {0.2}),      at(5, {0.6})};
  EXPECT_EQ(decide(six), "promote 3 to rung 1");
  // 1 finishes rung 1 first: alone there, so nothing to promote from it; rung 0's top 2 are gone.
  const std::vector<TrialView> next{at(0, {0.5}),       at(1, {0.9, 0.91}), at(2, {0.7}),
                                    running(3, {0.95}), at(4, {0.2}),       at(5, {0.6})};
  EXPECT_EQ(decide(next), "start 6");
}

TEST(Asha, PromotesTheTopThirdOfRungOneToTheLastRung) {
  // All 9 finished rung 0 (top 3: 3, 1, 7, all promoted); 1, 3 and 7 finished rung 1.
  const std::vector<TrialView> trials{at(0, {0.5}),        at(1, {0.9, 0.91}), at(2, {0.7}),
                                      at(3, {0.95, 0.93}), at(4, {0.2}),       at(5, {0.6}),
                                      at(6, {0.8}),        at(7, {0.85, 0.8}), at(8, {0.1})};
  EXPECT_EQ(decide(trials), "promote 3 to rung 2");
  auto after = trials;
  after[3] = running(3, {0.95, 0.93});
  EXPECT_EQ(decide(after), "wait") << "all 9 trials exist, and 3 runs";
  after[3] = at(3, {0.95, 0.93, 0.94});
  EXPECT_EQ(decide(after), "done, best 3");
}

TEST(Asha, PromotesFromTheHighestRungFirst) {
  // 12 trials finished rung 0: top 4 are 9 (0.99), 3, 1, 7; 9 waits at rung 0 while 3 leads rung 1.
  const std::vector<TrialView> trials{at(0, {0.5}), at(1, {0.9, 0.91}), at(2, {0.7}),  at(3, {0.95, 0.93}),
                                      at(4, {0.2}), at(5, {0.6}),       at(6, {0.8}),  at(7, {0.85, 0.8}),
                                      at(8, {0.1}), at(9, {0.99}),      at(10, {0.3}), at(11, {0.4})};
  EXPECT_EQ(decide(trials, 12), "promote 3 to rung 2") << "the closest to a finished model first";
  auto after = trials;
  after[3] = running(3, {0.95, 0.93});
  EXPECT_EQ(decide(after, 12), "promote 9 to rung 1");
}

TEST(Asha, TiesGoToTheLowerTrial) {
  EXPECT_EQ(decide({at(2, {0.7}), at(0, {0.5}), at(1, {0.7})}), "promote 1 to rung 1");
  EXPECT_EQ(decide({at(0, {0.7}), at(1, {0.7}), at(2, {0.7}), at(3, {0.7}), at(4, {0.7}), running(5)}),
            "promote 0 to rung 1");
  EXPECT_EQ(decide({at(0, {0.5}), at(1, {0.95, 0.7}), at(2, {0.9, 0.7})}, 3), "done, best 1");
}

TEST(Asha, DecisionsDoNotDependOnTheOrderOfTrials) {
  std::vector<TrialView> trials{at(0, {0.5}), running(1, {0.9}), at(2, {0.7}), at(3, {0.95}),
                                at(4, {0.2}), at(5, {0.6}),      at(6, {0.8}), failed(7)};
  const std::string expected = decide(trials);
  for (int turn = 0; turn < 8; ++turn) {
    std::rotate(trials.begin(), trials.begin() + 3, trials.end());
    if (turn % 2 == 1) std::reverse(trials.begin(), trials.end());
    EXPECT_EQ(decide(trials), expected);
  }
}

TEST(Asha, NaNIsTheWorstMetric) {
  EXPECT_EQ(decide({at(0, {std::nan("")}), at(1, {0.1}), at(2, {0.2})}), "promote 2 to rung 1");
}

TEST(Asha, AFailedTrialCountsAsTheWorstOfItsRung) {
  EXPECT_EQ(decide({failed(0), at(1, {0.6}), failed(2)}), "promote 1 to rung 1") << "3 reached rung 0";
  EXPECT_EQ(decide({failed(0), failed(1), failed(2)}, 3), "done, no best") << "a failed trial is never promoted";
  EXPECT_EQ(decide({at(0, {0.5}), failed(1, {0.9}), at(2, {0.7})}, 3), "done, best 1")
      << "1 failed on its way to rung 1: what it finished still counts";
}

TEST(Asha, WaitsUntilNothingRunsBeforeItIsDone) {
  EXPECT_EQ(decide({at(0, {0.5}), running(1, {0.9}), at(2, {0.7})}, 3), "wait");
  EXPECT_EQ(decide({at(0, {0.5}), at(1, {0.9, 0.6}), at(2, {0.7})}, 3), "done, best 1")
      << "the highest rung reached beats a higher metric below it";
}

TEST(AshaRandom, OneRungOnlyStartsWaitsAndEnds) {
  const AshaConfig random{.min_epochs = 5, .eta = 3, .max_epochs = 5};
  EXPECT_EQ(decide({}, 3, random), "start 0");
  EXPECT_EQ(decide({at(0, {0.9}), at(1, {0.5})}, 3, random), "start 2");
  EXPECT_EQ(decide({at(0, {0.9}), at(1, {0.5}), running(2)}, 3, random), "wait");
  EXPECT_EQ(decide({at(0, {0.5}), at(1, {0.9}), at(2, {0.7})}, 3, random), "done, best 1");
  EXPECT_EQ(classify(random, 3, {at(0, {0.5}), running(1)}),
            (std::vector<TrialState>{TrialState::kCompleted, TrialState::kRunning}));
}

TEST(Asha, RefusesTrialsThatContradictEachOther) {
  auto code = [](const std::vector<TrialView>& trials, int max_trials = 9) {
    return testing::thrown_code([&] { next_decision(kAsha, max_trials, trials); });
  };
  EXPECT_EQ(code({at(0, {0.5}), at(0, {0.6})}), ErrorCode::kInvalidArgument) << "twice";
  EXPECT_EQ(code({at(9, {0.5})}), ErrorCode::kInvalidArgument) << "beyond max_trials";
  EXPECT_EQ(code({at(-1, {0.5})}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code({at(0, {0.5, 0.6, 0.7, 0.8})}), ErrorCode::kInvalidArgument) << "more metrics than rungs";
  EXPECT_EQ(code({TrialView{0, {0.5}, true, true}}), ErrorCode::kInvalidArgument) << "running and failed";
  EXPECT_EQ(code({running(0, {0.5, 0.6, 0.7})}), ErrorCode::kInvalidArgument) << "past the last rung";
  EXPECT_EQ(code({at(0, {})}), ErrorCode::kInvalidArgument) << "never ran";
  EXPECT_EQ(code({}, 0), ErrorCode::kInvalidArgument) << "max_trials";
  EXPECT_EQ(testing::thrown_code([] { classify(kAsha, 9, {at(0, {})}); }), ErrorCode::kInvalidArgument);
}

constexpr TrialState kRun = TrialState::kRunning, kPause = TrialState::kPaused, kStop = TrialState::kStopped,
                     kDone = TrialState::kCompleted, kFail = TrialState::kFailed;

TEST(AshaClassify, PausedWhileMoreTrialsMayComeStoppedOnceNoQuotaCanReachIt) {
  const std::vector<TrialView> three{at(0, {0.5}), at(1, {0.9}), at(2, {0.7})};
  EXPECT_EQ(classify(kAsha, 9, three), (std::vector<TrialState>{kPause, kPause, kPause}))
      << "9 may finish rung 0 and 3 go on: ranks 0..2 may all make it";
  EXPECT_EQ(classify(kAsha, 3, three), (std::vector<TrialState>{kStop, kPause, kStop}))
      << "3 is all there will be: only the first goes on";
  EXPECT_EQ(classify(kAsha, 6, three), (std::vector<TrialState>{kStop, kPause, kPause}))
      << "at most 6 at rung 0, floor(6/3) = 2 promotions: the third can never be in them";
}

TEST(AshaClassify, AHigherRungStopsOnceTheOneBelowSettles) {
  // All 9 finished rung 0: 3, 1 and 7 went on, the other 6 are stopped, so at most 3 reach
  // rung 1 and only its best goes on: 1 (second there) is stopped although 7 still runs.
  const std::vector<TrialView> trials{at(0, {0.5}),        at(1, {0.9, 0.91}), at(2, {0.7}),
                                      at(3, {0.95, 0.93}), at(4, {0.2}),       at(5, {0.6}),
                                      at(6, {0.8}),        running(7, {0.85}), at(8, {0.1})};
  EXPECT_EQ(classify(kAsha, 9, trials),
            (std::vector<TrialState>{kStop, kStop, kStop, kPause, kStop, kStop, kStop, kRun, kStop}));
}

TEST(AshaClassify, CompletedAndFailed) {
  const std::vector<TrialView> trials{at(0, {0.5, 0.6, 0.7}), failed(1), failed(2, {0.9}), running(3, {0.8})};
  EXPECT_EQ(classify(kAsha, 4, trials), (std::vector<TrialState>{kDone, kFail, kFail, kRun}));
}

/// A sweep played out on `trainers` trainers: each free trainer asks next_decision, the oldest
/// job finishes first with a metric made up from the trial's id, every tenth trial fails.
class PlayedSweep {
 public:
  PlayedSweep(int max_trials, int trainers) : max_trials_(max_trials), trainers_(trainers) {}

  /// Runs to Done; returns it. Checks on the way that classify agrees with every decision.
  asha::Done play() {
    for (int step = 0; step < 10 * max_trials_; ++step) {
      while (static_cast<int>(queue_.size()) < trainers_) {
        const AshaDecision decision = next_decision(kAsha, max_trials_, trials_);
        if (const auto* done = std::get_if<asha::Done>(&decision)) return *done;
        if (std::holds_alternative<asha::Wait>(decision)) break;
        apply(decision);
        if (::testing::Test::HasFatalFailure()) return {};
      }
      finish_oldest();
    }
    ADD_FAILURE() << "no Done";
    return {};
  }

  const std::vector<TrialView>& trials() const { return trials_; }
  int epochs() const { return epochs_; }

 private:
  void apply(const AshaDecision& decision) {
    if (const auto* start = std::get_if<asha::Start>(&decision)) {
      ASSERT_EQ(start->trial, static_cast<int>(trials_.size()));
      trials_.push_back(running(start->trial));
      queue_.push_back(start->trial);
      return;
    }
    const auto& promote = std::get<asha::Promote>(decision);
    ASSERT_EQ(classify(kAsha, max_trials_, trials_)[static_cast<std::size_t>(promote.trial)], kPause);
    ASSERT_FALSE(stopped_.contains(promote.trial)) << "stopped is for good";
    ASSERT_EQ(static_cast<int>(trials_[static_cast<std::size_t>(promote.trial)].metrics.size()), promote.rung);
    trials_[static_cast<std::size_t>(promote.trial)].running = true;
    queue_.push_back(promote.trial);
  }

  void finish_oldest() {
    ASSERT_FALSE(queue_.empty()) << "waiting with nothing running";
    TrialView& t = trials_[static_cast<std::size_t>(queue_.front())];
    queue_.pop_front();
    t.running = false;
    const auto rung = t.metrics.size();
    const auto rungs = rung_epochs(kAsha);
    epochs_ += rungs[rung] - (rung == 0 ? 0 : rungs[rung - 1]);  // a promotion resumes
    if (t.trial % 10 == 4) {
      t.failed = true;
    } else {
      t.metrics.push_back(0.5 + 0.4 * std::fmod(t.trial * 0.618034, 1.0) + 0.01 * static_cast<double>(rung));
    }
    const auto states = classify(kAsha, max_trials_, trials_);
    for (const TrialView& v : trials_) {
      if (states[static_cast<std::size_t>(v.trial)] == kStop) stopped_.insert(v.trial);
    }
  }

  int max_trials_;
  int trainers_;
  std::vector<TrialView> trials_;
  std::deque<int> queue_;  // running trials, oldest first
  std::set<int> stopped_;
  int epochs_ = 0;
};

TEST(AshaClassify, AgreesWithNextDecisionOverAWholeSweep) {
  for (const int trainers : {1, 2, 5}) {
    PlayedSweep sweep(27, trainers);
    const asha::Done done = sweep.play();
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    int completed = 0;
    for (const TrialState state : classify(kAsha, 27, sweep.trials())) {
      EXPECT_TRUE(state == kDone || state == kStop || state == kFail) << "Done leaves nothing paused";
      completed += state == kDone ? 1 : 0;
    }
    EXPECT_GE(completed, 1) << trainers;
    ASSERT_TRUE(done.best_trial.has_value());
    EXPECT_EQ(sweep.trials()[static_cast<std::size_t>(*done.best_trial)].metrics.size(), 3u);
    EXPECT_LT(sweep.epochs(), 27 * 9 / 2) << "successive halving spends far less than every trial to R";
  }
}

}  // namespace
}  // namespace mlswarm
