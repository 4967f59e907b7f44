// Settings from flags and environment variables: one validator for both, errors that name
// the variable and exit 2.

#include <gtest/gtest.h>

#include <cstdlib>

#include "../../support/temp_dir.h"
#include "controller_config.h"
#include "trainer_config.h"

namespace mlswarm {
namespace {

/// Sets environment variables for one test and restores them after.
class Env {
 public:
  Env(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      ::setenv(name, value, 1);
    }
  }
  ~Env() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

std::variant<ControllerConfig, cli::ParseExit> controller(std::vector<const char*> args) {
  args.insert(args.begin(), "ml_controller");
  return parse_controller_config(static_cast<int>(args.size()), args.data(), [] { return std::string("v-test"); });
}

std::variant<TrainerConfig, cli::ParseExit> trainer(std::vector<const char*> args) {
  args.insert(args.begin(), "ml_trainer");
  return parse_trainer_config(static_cast<int>(args.size()), args.data(), [] { return std::string("v-test"); });
}

template <typename V>
cli::ParseExit exit_of(const V& parsed) {
  const auto* exit = std::get_if<cli::ParseExit>(&parsed);
  return exit ? *exit : cli::ParseExit{-1, "parsed"};
}

TEST(Config, AFlagAndItsVariableAreValidatedAlikeAndExit2NamingBoth) {
  auto by_flag = exit_of(controller({"--subnet", "10.42.0.0/24", "--port", "70000"}));
  EXPECT_EQ(by_flag.code, 2);
  EXPECT_NE(by_flag.output.find("CONTROLLER_PORT"), std::string::npos) << by_flag.output;
  Env env{{"CONTROLLER_PORT", "70000"}};
  auto by_env = exit_of(controller({"--subnet", "10.42.0.0/24"}));
  EXPECT_EQ(by_env.code, 2);
  EXPECT_NE(by_env.output.find("CONTROLLER_PORT"), std::string::npos) << by_env.output;
  EXPECT_NE(by_env.output.find("70000"), std::string::npos) << by_env.output;
}

TEST(Config, TheFlagWinsOverTheVariable) {
  Env env{{"CONTROLLER_PORT", "4000"}, {"SUBNET_TRAIN", "10.42.0.0/24"}};
  auto parsed = controller({"--port", "5000"});
  ASSERT_TRUE(std::holds_alternative<ControllerConfig>(parsed)) << exit_of(parsed).output;
  EXPECT_EQ(std::get<ControllerConfig>(parsed).port, 5000);
  EXPECT_EQ(std::get<ControllerConfig>(controller({})).port, 4000);
}

TEST(Config, NegativeBatchAndOtherOutOfRangeValuesFromTheEnvironmentAreRefused) {
  for (auto [name, value] : std::vector<std::pair<const char*, const char*>>{{"PREDICT_MAX_BATCH", "-1"},
                                                                             {"HTTP_THREADS", "-1"},
                                                                             {"SCAN_INTERVAL_MS", "12abc"},
                                                                             {"TRAINER_TIMEOUT_MS", "1e9"}}) {
    Env env{{"SUBNET_TRAIN", "10.42.0.0/24"}, {name, value}};
    auto exit = exit_of(controller({}));
    EXPECT_EQ(exit.code, 2) << name << "=" << value;
    EXPECT_NE(exit.output.find(name), std::string::npos) << exit.output;
  }
}

TEST(Config, BooleansTakeTheUsualSpellings) {
  for (const char* yes : {"1", "true", "TRUE", "yes", "Yes", "on"}) {
    Env env{{"SUBNET_TRAIN", "10.42.0.0/24"}, {"PUBLIC_READS", yes}};
    auto parsed = controller({});
    ASSERT_TRUE(std::holds_alternative<ControllerConfig>(parsed)) << yes << ": " << exit_of(parsed).output;
    EXPECT_TRUE(std::get<ControllerConfig>(parsed).public_reads) << yes;
  }
  for (const char* no : {"0", "false", "no", "off", "FALSE"}) {
    Env env{{"SUBNET_TRAIN", "10.42.0.0/24"}, {"PUBLIC_READS", no}};
    auto parsed = controller({});
    ASSERT_TRUE(std::holds_alternative<ControllerConfig>(parsed)) << no << ": " << exit_of(parsed).output;
    EXPECT_FALSE(std::get<ControllerConfig>(parsed).public_reads) << no;
  }
  Env env{{"SUBNET_TRAIN", "10.42.0.0/24"}, {"PUBLIC_READS", "maybe"}};
  auto exit = exit_of(controller({}));
  EXPECT_EQ(exit.code, 2);
  EXPECT_NE(exit.output.find("PUBLIC_READS"), std::string::npos) << exit.output;
  Env help_env{{"PUBLIC_READS", "true"}};
  EXPECT_EQ(exit_of(controller({"--help"})).code, 0) << "a set boolean does not break --help";
}

TEST(Config, LogLevelsAreCaseInsensitiveAndUnknownOnesRefused) {
  {
    Env env{{"LOG_LEVEL", "INFO"}};
    auto parsed = trainer({});
    ASSERT_TRUE(std::holds_alternative<TrainerConfig>(parsed)) << exit_of(parsed).output;
    EXPECT_EQ(std::get<TrainerConfig>(parsed).log_level, "info") << "INFO must not silence the daemon";
  }
  {
    Env env{{"LOG_LEVEL", "Warning"}, {"LOG_FORMAT", "JSON"}};
    auto parsed = trainer({});
    ASSERT_TRUE(std::holds_alternative<TrainerConfig>(parsed)) << exit_of(parsed).output;
    EXPECT_EQ(std::get<TrainerConfig>(parsed).log_level, "warn");
    EXPECT_EQ(std::get<TrainerConfig>(parsed).log_format, "json");
  }
  Env env{{"LOG_LEVEL", "verbose"}};
  auto exit = exit_of(trainer({}));
  EXPECT_EQ(exit.code, 2);
  EXPECT_NE(exit.output.find("LOG_LEVEL"), std::string::npos) << exit.output;
}

TEST(Config, VersionAndHelpExit0) {
  auto version = exit_of(trainer({"--version"}));
  EXPECT_EQ(version.code, 0);
  EXPECT_NE(version.output.find("v-test"), std::string::npos);
  Env env{{"TRAIN_PORT", "not-a-port"}};
  auto odd = exit_of(trainer({"--version"}));
  EXPECT_EQ(odd.code, 0) << "--version works whatever the environment holds: " << odd.output;
  auto help = exit_of(controller({"--help"}));
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.output.find("SUBNET_TRAIN"), std::string::npos) << "help names every variable";
}

TEST(Config, SubnetAndTokenFilesAreCheckedAtStart) {
  auto exit = exit_of(controller({"--subnet", "30.0.0"}));
  EXPECT_EQ(exit.code, -1) << "the seed's form parses";
  exit = exit_of(controller({"--subnet", "10.42.0.0/8"}));
  EXPECT_EQ(exit.code, 2);
  EXPECT_NE(exit.output.find("SUBNET_TRAIN"), std::string::npos) << exit.output;
  testing::TempDir dir;
  const auto empty = dir / "token";
  std::ofstream(empty).close();
  exit = exit_of(trainer({"--cluster-token-file", empty.c_str()}));
  EXPECT_EQ(exit.code, 2);
  EXPECT_NE(exit.output.find("CLUSTER_TOKEN_FILE"), std::string::npos) << exit.output;
}

TEST(Config, ThePreloadListIsModelIdsParsedOnce) {
  const auto parsed = controller({"--subnet", "127.0.0.0/30", "--serve-preload", "fmnist-a,,cifar"});
  ASSERT_TRUE(std::holds_alternative<ControllerConfig>(parsed)) << exit_of(parsed).output;
  EXPECT_EQ(std::get<ControllerConfig>(parsed).serve_preload, (std::vector<std::string>{"fmnist-a", "cifar"}));
  Env env{{"SERVE_PRELOAD", "ok,../etc"}};
  auto exit = exit_of(controller({"--subnet", "127.0.0.0/30"}));
  EXPECT_EQ(exit.code, 2);
  EXPECT_NE(exit.output.find("SERVE_PRELOAD"), std::string::npos) << exit.output;
  EXPECT_NE(exit.output.find("'../etc' is not a model id"), std::string::npos) << exit.output;
}

}  // namespace
}  // namespace mlswarm
