// Data-parallel jobs on real trainers on loopback: one model trained across two trainers
// matches the same spec on one, the ranks hold identical parameters after every epoch, and a
// job that loses a rank resumes from its checkpoint on the trainers that are free.

#include <regex>

#include "cluster_fixture.h"
#include "mlswarm/model_meta.h"

namespace mlswarm {
namespace {

ModelMeta meta_of(const TempDir& home, const std::string& model_id) {
  std::ifstream in(home / "models" / model_id / "meta.json");
  return model_meta_from_json(json::parse(in));
}

/// "epoch E rank R parameters crc32 X" lines of a trainer's log: (epoch, rank) -> checksum.
std::map<std::pair<int, int>, std::string> checksums(const std::string& log, const std::string& job_id) {
  std::map<std::pair<int, int>, std::string> out;
  std::regex line("job " + job_id + R"( model \S+: epoch (\d+) rank (\d+) parameters crc32 ([0-9a-f]{8});)");
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it) {
    out[{std::stoi((*it)[1]), std::stoi((*it)[2])}] = (*it)[3];
  }
  return out;
}

// Item 1: the same spec on two trainers and on one.
TEST_F(ClusterTest, TwoTrainersTrainTheSameModelAsOne) {
  for (int i : {2, 3}) start_trainer(i, {"--dist-timeout-ms", "20000"});
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 2; }, 10s));
  const json spec = {{"example_idxs", {0, 6000}},
                     {"test_idxs", {0, kTestImages}},
                     {"train_opts", {{"epochs", 2}, {"batch_size", 64}}}};
  json shared = spec;
  shared["model_id"] = "dp-two";
  shared["trainers"] = 2;
  const std::string two = submit_json(shared);
  ASSERT_TRUE(eventually([&] { return job_in(two, "running"); }, 20s)) << job(two).dump();
  const json running = job(two);
  EXPECT_EQ(running["world_size"], 2);
  ASSERT_EQ(running["trainers"].size(), 2u) << "the controller lists both ranks";
  EXPECT_EQ(running["trainer"], running["trainers"][0]) << "trainer is rank 0";
  for (int rank = 0; rank < 2; ++rank) {
    const std::string address = running["trainers"][rank];
    httplib::Client trainer(address.substr(0, address.find(':')), train_port_);
    const json mine = testing::get_json(trainer, "/jobs/" + two);
    EXPECT_EQ(mine["rank"], rank) << mine.dump();
    EXPECT_EQ(mine["world_size"], 2);
  }
  ASSERT_TRUE(eventually([&] { return job_in(two, "succeeded"); }, 300s)) << job(two).dump();

  json alone = spec;
  alone["model_id"] = "dp-one";
  const std::string one = submit_json(alone);
  ASSERT_TRUE(eventually([&] { return job_in(one, "succeeded"); }, 300s)) << job(one).dump();

  const ModelMeta a = meta_of(home_, "dp-two");
  const ModelMeta b = meta_of(home_, "dp-one");
  ASSERT_EQ(a.epochs.size(), 2u);
  ASSERT_EQ(b.epochs.size(), 2u);
  for (std::size_t e = 0; e < 2; ++e) {
    std::cout << "epoch " << e + 1 << ": train loss " << a.epochs[e].train_loss << " on 2 trainers, "
              << b.epochs[e].train_loss << " on 1; test accuracy " << a.epochs[e].accuracy << " and "
              << b.epochs[e].accuracy << "; images/s " << a.epochs[e].images_per_s << " and "
              << b.epochs[e].images_per_s << "\n";
    EXPECT_NEAR(a.epochs[e].train_loss, b.epochs[e].train_loss, 0.03 * b.epochs[e].train_loss) << "epoch " << e + 1;
  }
  EXPECT_NEAR(a.epochs.back().accuracy, b.epochs.back().accuracy, 0.015);
  std::string logs;
  for (int i : {2, 3}) logs += trainers_[i]->log();
  const auto sums = checksums(logs, two);
  for (int epoch : {1, 2}) {
    ASSERT_TRUE(sums.contains({epoch, 0}) && sums.contains({epoch, 1})) << "epoch " << epoch << " checksums missing";
    EXPECT_EQ(sums.at({epoch, 0}), sums.at({epoch, 1})) << "the ranks' parameters differ after epoch " << epoch;
  }
}

// Item 2: a rank killed in epoch 2; the job resumes from its checkpoint with the next attempt
// on the trainers that are free, and nothing of the first attempt lands after that.
TEST_F(ClusterTest, ADataParallelJobThatLosesARankResumesOnTheFreeTrainers) {
  for (int i : {2, 3, 4}) start_trainer(i, {"--dist-timeout-ms", "5000"});
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 3; }, 10s));
  const std::string id = submit_json({{"model_id", "elastic"},
                                      {"trainers", 2},
                                      {"min_trainers", 1},
                                      {"example_idxs", {0, 4000}},
                                      {"test_idxs", {0, kTestImages}},
                                      {"train_opts", {{"epochs", 3}, {"batch_size", 64}}}});
  ASSERT_TRUE(eventually([&] { return job(id).value("epoch", 0) == 2 && job(id).value("step", 0) > 3; }, 240s))
      << job(id).dump();
  const json before = job(id);
  ASSERT_EQ(before["world_size"], 2);
  const std::string victim_address = before["trainers"][1];
  const int victim = victim_address[8] - '0';  // "127.0.0.<i>:port"
  const auto killed = std::chrono::steady_clock::now();
  trainers_[victim]->signal(SIGKILL);
  ASSERT_TRUE(eventually(
      [&] {
        json j = job(id);
        return j.value("attempts", 0) >= 2 && j["state"] == "running" && j.value("step", 0) > 0;
      },
      120s))
      << job(id).dump();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  const json resumed = job(id);
  std::cout << "a rank SIGKILLed in epoch 2: training again " << seconds << " s later, attempt " << resumed["attempts"]
            << " on " << resumed["trainers"].dump() << "\n";
  ASSERT_TRUE(eventually([&] { return job_in(id, "succeeded"); }, 300s)) << job(id).dump();
  const json done = job(id);
  EXPECT_GE(done["attempts"].get<int>(), 2);
  const ModelMeta meta = meta_of(home_, "elastic");
  EXPECT_EQ(meta.attempt, done["attempts"].get<int>()) << "meta.json was written by another attempt";
  EXPECT_EQ(meta.epochs.size(), 3u);
  std::string logs;
  for (auto& [i, t] : trainers_) logs += t->log();
  EXPECT_NE(logs.find("resuming from checkpoint at epoch 2 step 0"), std::string::npos)
      << "the new attempt did not start from the epoch-1 checkpoint";
}

}  // namespace
}  // namespace mlswarm
