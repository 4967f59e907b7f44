#pragma once

// The fixture of the integration tests that run a real controller and real trainers as
// separate processes on loopback addresses (the same discovery, dispatch and serving code
// paths as on an overlay network).

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../support/http_json.h"
#include "../support/process.h"
#include "../support/temp_dir.h"
#include "../support/wait.h"

namespace mlswarm {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;
using testing::eventually;
using testing::TempDir;

/// The jobs of these tests evaluate each epoch on the first 2,000 test images (test_idxs), not
/// all 10,000: on 2 cores the evaluation was most of a small job's time.
inline constexpr int kTestImages = 2000;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    train_port_ = testing::free_port("127.0.0.1");
    controller_port_ = testing::free_port("127.0.0.1");
    // Data-parallel jobs meet on ports of this test's own: tests run side by side (ctest -j),
    // and the default range (RDZV_PORT 48517 and up) would be every test's.
    rendezvous_port_ = testing::free_port_range(8);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", controller_port_);
    client_->set_read_timeout(30s);
  }
  void TearDown() override {
    if (HasFailure()) {
      if (controller_) std::cerr << "--- controller log ---\n" << controller_->log();
      if (follower_) std::cerr << "--- controller b log ---\n" << follower_->log();
      for (auto& [i, t] : trainers_) std::cerr << "--- trainer 127.0.0." << i << " log ---\n" << t->log();
    }
  }

  /// Starts a trainer on 127.0.0.<i> (on the trainers' port, or `port`) and waits until it answers.
  void start_trainer(int i, const std::vector<std::string>& extra = {}, int port = 0) {
    std::string host = "127.0.0." + std::to_string(i);
    if (port == 0) port = train_port_;
    std::vector<std::string> args{"--host",     host,
                                  "--port",     std::to_string(port),
                                  "--home-dir", home_.path().string(),
                                  "--data-dir", MLSWARM_DATA_DIR,
                                  "--threads",  "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    trainers_[i] = std::make_unique<ChildProcess>(ML_TRAINER_BIN, args, home_ / ("trainer-" + host + ".log"));
    httplib::Client probe(host, port);
    ASSERT_TRUE(eventually([&] { return probe.Get("/healthz") != nullptr; }, 20s));
  }
  /// Starts the controller and waits until it answers. Discovery runs every 300 ms with 2
  /// misses allowed, unless `default_discovery` (every 2 s, 3 misses, as deployed).
  void start_controller(const std::vector<std::string>& extra = {}, bool default_discovery = false) {
    std::vector<std::string> args{"--host",     "127.0.0.1",           "--port",       std::to_string(controller_port_),
                                  "--subnet",   "127.0.0.0/24",        "--train-port", std::to_string(train_port_),
                                  "--home-dir", home_.path().string(), "--data-dir",   MLSWARM_DATA_DIR};
    if (!default_discovery) args.insert(args.end(), {"--scan-interval-ms", "300", "--max-misses", "2"});
    args.insert(args.end(), {"--rdzv-port", std::to_string(rendezvous_port_)});
    args.insert(args.end(), extra.begin(), extra.end());
    controller_ = std::make_unique<ChildProcess>(ML_CONTROLLER_BIN, args, home_ / "controller.log");
    ASSERT_TRUE(eventually([&] { return client_->Get("/healthz") != nullptr; }, 20s)) << controller_->log();
  }

  /// A second controller on 127.0.0.11, the same HOME_DIR and port.
  void start_follower() {
    std::vector<std::string> args{"--host",
                                  "127.0.0.11",
                                  "--port",
                                  std::to_string(controller_port_),
                                  "--subnet",
                                  "127.0.0.0/29",
                                  "--train-port",
                                  std::to_string(train_port_),
                                  "--home-dir",
                                  home_.path().string(),
                                  "--data-dir",
                                  MLSWARM_DATA_DIR,
                                  "--scan-interval-ms",
                                  "300",
                                  "--max-misses",
                                  "2",
                                  "--drain-ms",
                                  "500",
                                  "--rdzv-port",
                                  std::to_string(rendezvous_port_)};
    follower_ = std::make_unique<ChildProcess>(ML_CONTROLLER_BIN, args, home_ / "controller-b.log");
    other_ = std::make_unique<httplib::Client>("127.0.0.11", controller_port_);
    other_->set_read_timeout(30s);
    ASSERT_TRUE(eventually([&] { return other_->Get("/healthz") != nullptr; }, 20s)) << follower_->log();
  }

  /// A controller serving HTTPS; waits until it answers over TLS.
  void start_controller_tls(const std::filesystem::path& cert, const std::filesystem::path& key) {
    std::vector<std::string> args{
        "--host",         "127.0.0.1",           "--port",          std::to_string(controller_port_),
        "--subnet",       "127.0.0.0/24",        "--train-port",    std::to_string(train_port_),
        "--home-dir",     home_.path().string(), "--tls-cert-file", cert.string(),
        "--tls-key-file", key.string()};
    controller_ = std::make_unique<ChildProcess>(ML_CONTROLLER_BIN, args, home_ / "controller.log");
    httplib::SSLClient probe("127.0.0.1", controller_port_);
    probe.enable_server_certificate_verification(false);
    ASSERT_TRUE(eventually([&] { return probe.Get("/healthz") != nullptr; }, 20s)) << controller_->log();
  }

  json get(const std::string& path) { return testing::get_json(*client_, path); }
  std::pair<int, json> post(const std::string& path, const std::string& body) {
    return testing::post_json(*client_, path, body);
  }
  /// POST /train with this spec; the job id.
  std::string submit_json(const json& spec) {
    auto [status, body] = post("/train", spec.dump());
    EXPECT_EQ(status, 202) << body.dump();
    return body.value("job_id", "");
  }
  std::size_t trainer_count() { return get("/status").value("trainers", json::array()).size(); }
  json job(const std::string& id) { return get("/jobs/" + id); }
  bool job_in(const std::string& id, const std::string& state) { return job(id).value("state", "") == state; }
  std::string submit(const std::string& model_id, int examples, int epochs = 1) {
    auto [status, body] = post("/train", json{{"model_id", model_id},
                                              {"example_idxs", {0, examples}},
                                              {"test_idxs", {0, kTestImages}},
                                              {"train_opts", {{"epochs", epochs}, {"batch_size", 64}}}}
                                             .dump());
    EXPECT_EQ(status, 202) << body.dump();
    return body.value("job_id", "");
  }

  TempDir home_;
  int train_port_ = 0;
  int controller_port_ = 0;
  int rendezvous_port_ = 0;
  std::map<int, std::unique_ptr<ChildProcess>> trainers_;
  std::unique_ptr<ChildProcess> controller_;
  std::unique_ptr<httplib::Client> client_;
  std::unique_ptr<ChildProcess> follower_;  ///< start_follower's
  std::unique_ptr<httplib::Client> other_;  ///< to the follower
};

inline std::filesystem::path write_secret(const TempDir& dir, const std::string& name, const std::string& token) {
  auto path = dir / name;
  std::ofstream(path) << token << "\n";
  return path;
}

}  // namespace mlswarm
