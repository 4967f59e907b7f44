// Promises at the edges (ctest label `faults`): a full disk under HOME_DIR, a leader paused
// past a takeover. HOME_DIR is a 1 MiB tmpfs that the test fills and frees, so these tests need
// root (CI runs as root); elsewhere they skip.

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <set>
#include <thread>

#include "cluster_fixture.h"
#include "mlswarm/attempt_fence.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

/// A tmpfs of `size` mounted on a fresh folder, and a file that fills it.
class SmallDisk {
 public:
  SmallDisk(const std::filesystem::path& dir, const char* size) : dir_(dir) {
    std::filesystem::create_directories(dir_);
    const std::string options = std::string("size=") + size + ",mode=0755";
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) == 0;
  }
  ~SmallDisk() {
    free();
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
  bool mounted() const { return mounted_; }
  const std::filesystem::path& path() const { return dir_; }

  /// Writes a file until the disk is full; it stays until free().
  void fill() {
    const int fd = ::open((dir_ / "filler").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    const std::string block(4096, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    const int error = errno;
    // The last partial page too: a write of one byte at a time until none fits.
    while (::write(fd, "x", 1) == 1) {
    }
    ::close(fd);
    EXPECT_EQ(error, ENOSPC);
  }
  void free() {
    std::error_code ec;
    std::filesystem::remove(dir_ / "filler", ec);
  }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
};

class FaultsTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
    disk_ = std::make_unique<SmallDisk>(home_ / "disk", "1m");
    if (!disk_->mounted()) GTEST_SKIP() << "cannot mount a tmpfs here";
  }
  void TearDown() override {
    for (auto* c : {controller_.get(), second_.get()}) {
      if (c && c->pid() > 0) ::kill(c->pid(), SIGCONT);
    }
    if (HasFailure() && second_) std::cerr << "--- controller b log ---\n" << second_->log();
    ClusterTest::TearDown();
    controller_.reset();
    second_.reset();
    disk_.reset();  // unmounted before home_ is removed
  }
  /// A controller on 127.0.0.<host> with HOME_DIR on the small disk, its log outside it.
  std::unique_ptr<ChildProcess> start_on_disk(int host, const std::string& log) {
    const std::string address = "127.0.0." + std::to_string(host);
    std::vector<std::string> args{"--host", address, "--port", std::to_string(controller_port_), "--subnet",
                                  "127.0.0.0/29", "--train-port", std::to_string(train_port_), "--home-dir",
                                  disk_->path().string(), "--data-dir", MLSWARM_DATA_DIR, "--drain-ms", "200"};
    auto process = std::make_unique<ChildProcess>(ML_CONTROLLER_BIN, args, home_ / log);
    httplib::Client probe(address, controller_port_);
    EXPECT_TRUE(eventually([&] { return probe.Get("/healthz") != nullptr; }, 20s)) << process->log();
    return process;
  }
  static json role(const std::string& address, int port) {
    httplib::Client c(address, port);
    c.set_read_timeout(5s);
    auto res = c.Get("/status");
    if (!res || res->status != 200) return json::object();
    return json::parse(res->body, nullptr, false).value("controller", json::object());
  }
  json role_a() { return role("127.0.0.1", controller_port_); }
  json role_b() { return role("127.0.0.11", controller_port_); }
  std::pair<int, json> train_on(const std::string& address, const std::string& job_id) {
    httplib::Client c(address, controller_port_);
    c.set_read_timeout(30s);
    return testing::post_json(c, "/train", json{{"job_id", job_id}, {"model_id", job_id}}.dump());
  }
  std::set<std::string> job_ids() {
    std::set<std::string> ids;
    for (const auto& j : get("/jobs").value("jobs", json::array())) ids.insert(j.value("job_id", ""));
    return ids;
  }
  bool log_says(const ChildProcess& c, const std::string& text) { return c.log().find(text) != std::string::npos; }

  std::unique_ptr<SmallDisk> disk_;
  std::unique_ptr<ChildProcess> second_;
};

// Issue 28, case 1: the lease renewal under a full disk emptied leader.lock, the next term
// counted from 1 again, and the jobs journaled under it were dropped on replay as stale.
TEST_F(FaultsTest, JobsAnswered202SurviveAMomentOfFullDisk) {
  controller_ = start_on_disk(1, "controller.log");  // term 1
  controller_->signal(SIGTERM);
  ASSERT_TRUE(controller_->wait_exit(20s));
  controller_ = start_on_disk(1, "controller.log");  // term 2
  ASSERT_TRUE(eventually([&] { return role_a().value("role", "") == "leader"; }, 10s)) << controller_->log();
  const std::uint64_t before = role_a().value("term", 0ULL);
  EXPECT_EQ(before, 2u);
  for (const char* id : {"a", "b"}) ASSERT_EQ(train_on("127.0.0.1", id).first, 202);

  disk_->fill();
  ASSERT_TRUE(eventually([&] { return log_says(*controller_, "No space left on device"); }, 20s))
      << "the lease renewal never met the full disk: " << controller_->log();
  auto [status, body] = train_on("127.0.0.1", "x");
  EXPECT_EQ(status, 503) << "a /train while the disk is full: " << body.dump();
  disk_->free();

  ASSERT_TRUE(eventually([&] { return role_a().value("role", "") == "leader"; }, 20s)) << controller_->log();
  const std::uint64_t after = role_a().value("term", 0ULL);
  EXPECT_GT(after, before) << "a new term after the full disk must exceed every earlier one";
  for (const char* id : {"c", "d"}) ASSERT_EQ(train_on("127.0.0.1", id).first, 202);

  controller_->signal(SIGTERM);
  ASSERT_TRUE(controller_->wait_exit(20s));
  controller_ = start_on_disk(1, "controller.log");
  ASSERT_TRUE(eventually([&] { return role_a().value("role", "") == "leader"; }, 10s)) << controller_->log();
  EXPECT_EQ(job_ids(), (std::set<std::string>{"a", "b", "c", "d"}))
      << "every job answered 202 is there after a restart, and the one answered 503 is not";
}

// Issue 28, case 2: a paused leader S1 (term 1) woke after S2 had taken term 2, lost it to a
// full disk and taken "term 1" again; S1 renewed term 1 and both acted as leader.
TEST_F(FaultsTest, APausedLeaderNeverSharesATermWithTheNextOne) {
  controller_ = start_on_disk(1, "controller.log");
  ASSERT_TRUE(eventually([&] { return role_a().value("role", "") == "leader"; }, 10s)) << controller_->log();
  second_ = start_on_disk(11, "controller-b.log");
  ASSERT_TRUE(eventually([&] { return role_b().value("role", "") == "follower"; }, 10s)) << second_->log();
  const std::uint64_t first = role_a().value("term", 0ULL);

  controller_->signal(SIGSTOP);
  ASSERT_TRUE(eventually([&] { return role_b().value("role", "") == "leader"; }, 20s)) << second_->log();
  EXPECT_GT(role_b().value("term", 0ULL), first);
  disk_->fill();
  ASSERT_TRUE(eventually([&] { return log_says(*second_, "No space left on device"); }, 20s)) << second_->log();
  disk_->free();
  ASSERT_TRUE(eventually([&] { return role_b().value("role", "") == "leader"; }, 20s)) << second_->log();
  const std::uint64_t second_term = role_b().value("term", 0ULL);
  EXPECT_GT(second_term, first) << "terms never go back";

  controller_->signal(SIGCONT);
  ASSERT_TRUE(eventually([&] { return role_a().value("role", "") == "follower"; }, 10s))
      << "the woken leader must step down: " << role_a().dump() << "\n" << controller_->log();
  EXPECT_EQ(role_b().value("role", ""), "leader");
  EXPECT_EQ(role_a().value("term", 0ULL), role_b().value("term", 0ULL));
  // A write to the woken replica goes to the one leader.
  httplib::Client c("127.0.0.1", controller_port_);
  c.set_read_timeout(30s);
  auto res = c.Post("/train", json{{"job_id", "after"}, {"model_id", "after"}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 202) << res->body;
  EXPECT_EQ(res->get_header_value("X-Forwarded-To"), "127.0.0.11:" + std::to_string(controller_port_));
}

// Issue 28, case 3: the attempt fence was truncated and rewritten in place. On a full disk with
// another writer (a trainer's checkpoint) taking every page freed, the truncation's page went to
// that writer and the rewrite failed: the fence was left empty, which lets any stale attempt
// through. Whatever a claim does here, the fence may never read lower than the last attempt that
// claimed it.
TEST_F(FaultsTest, AFailedWriteOfTheAttemptFenceKeepsTheOldAttempt) {
  const auto job_dir = disk_->path() / "jobs" / "j";
  AttemptFence(job_dir, 3).claim();
  ASSERT_EQ(AttemptFence::current(job_dir), 3);
  disk_->fill();
  std::atomic<bool> stop{false};
  std::thread writer([&] {  // takes every page that comes free
    const int fd = ::open((disk_->path() / "filler").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    const std::string block(4096, 'y');
    while (!stop) (void)!::write(fd, block.data(), block.size());
    ::close(fd);
  });
  int claimed = 3;
  int refused = 0;
  for (int attempt = 4; attempt < 2000; ++attempt) {
    try {
      AttemptFence(job_dir, attempt).claim();
      claimed = attempt;
    } catch (const Error&) {
      ++refused;
    }
    const int now = AttemptFence::current(job_dir);
    if (now < claimed) {
      ADD_FAILURE() << "the fence reads " << now << " after attempt " << claimed << " claimed it";
      break;
    }
  }
  stop = true;
  writer.join();
  EXPECT_GT(refused, 0) << "no claim met the full disk";
  EXPECT_THROW(AttemptFence(job_dir, claimed - 1).guarded([] {}), Error) << "an older attempt is still stale";
  disk_->free();
  AttemptFence(job_dir, claimed + 1).claim();
  EXPECT_EQ(AttemptFence::current(job_dir), claimed + 1);
}

}  // namespace
}  // namespace mlswarm
