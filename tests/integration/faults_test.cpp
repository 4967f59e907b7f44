// Promises at the edges (ctest label `faults`): a full disk under HOME_DIR, a leader paused
// past a takeover. HOME_DIR is a 1 MiB tmpfs that the test fills and frees, so these tests need
// root (CI runs as root); elsewhere they skip.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <cerrno>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include <turbojpeg.h>
#include <zlib.h>

#include "../support/fake_peers.h"
#include "../support/hostile_clients.h"
#include "../support/small_disk.h"
#include "cluster_fixture.h"
#include "mlswarm/attempt_fence.h"
#include "mlswarm/error.h"
#include "mlswarm/signing.h"

namespace mlswarm {
namespace {

using testing::peak_rss_kib;

/// A host on the trainers' subnet that answers every connection on host:port with a hostile
/// reply, written with raw sockets (no HTTP library between it and the controller), and
/// records how long the controller kept each connection open.
class HostilePeer {
 public:
  enum class Mode {
    kLyingLength,     ///< Content-Length: 1000000000000 and the first body bytes in the same send
    kEndlessBody,     ///< a body that never ends, as fast as the socket takes it
    kByteASecond,     ///< a valid reply, one byte a second
    kEndlessHeaders,  ///< header lines that never end
  };
  HostilePeer(const std::string& host, int port, Mode mode) : mode_(mode) {
    listener_ = testing::listen_tcp(host, port);
    bound_ = listener_ >= 0;
    accepter_ = std::thread([this] { accept_loop(); });
  }
  ~HostilePeer() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    accepter_.join();
    for (auto& t : connections_) t.join();
  }
  HostilePeer(const HostilePeer&) = delete;
  HostilePeer& operator=(const HostilePeer&) = delete;
  bool bound() const { return bound_; }
  int connections() const { return connections_count_.load(); }
  /// The longest time the controller held one of its connections open, in seconds.
  double longest_s() const { return longest_ms_.load() / 1000.0; }

 private:
  void accept_loop() {
    while (!stop_) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stop_) return;
        continue;
      }
      ++connections_count_;
      connections_.emplace_back([this, fd] { serve(fd); });
    }
  }
  /// Whether the controller has closed the connection (waits up to `ms` for it).
  static bool closed(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return false;
    char b[512];
    return ::recv(fd, b, sizeof b, MSG_DONTWAIT) == 0 || (p.revents & (POLLHUP | POLLERR)) != 0;
  }
  bool send_all(int fd, const std::string& text) {
    return ::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
  }
  void serve(int fd) {
    const auto start = std::chrono::steady_clock::now();
    char request[4096];
    (void)!::recv(fd, request, sizeof request, 0);  // the probe's GET /type, whole or not
    const std::string ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n";
    const auto deadline = start + 30s;
    switch (mode_) {
      case Mode::kLyingLength: {
        std::string reply = ok + "Content-Length: 1000000000000\r\n\r\n{\"type\":\"train\",\"pad\":\"";
        reply += std::string(2000, 'x');
        send_all(fd, reply);  // one send: headers and body together
        while (!stop_ && std::chrono::steady_clock::now() < deadline && !closed(fd, 100)) {
        }
        break;
      }
      case Mode::kEndlessBody: {
        send_all(fd, ok + "\r\n{\"type\":\"train\",\"pad\":\"");
        const std::string block(64 << 10, 'x');
        while (!stop_ && std::chrono::steady_clock::now() < deadline && send_all(fd, block)) {
        }
        break;
      }
      case Mode::kByteASecond: {
        const std::string reply = ok + "Content-Length: 16\r\n\r\n{\"type\":\"train\"}";
        for (char c : reply) {
          if (stop_ || !send_all(fd, std::string(1, c)) || closed(fd, 1000)) break;
        }
        break;
      }
      case Mode::kEndlessHeaders: {
        send_all(fd, "HTTP/1.1 200 OK\r\n");
        while (!stop_ && std::chrono::steady_clock::now() < deadline && send_all(fd, "X-Padding: yes\r\n")) {
        }
        break;
      }
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    if (!stop_) longest_ms_ = std::max<long>(longest_ms_.load(), static_cast<long>(ms.count()));
    ::close(fd);
  }

  Mode mode_;
  int listener_ = -1;
  bool bound_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_count_{0};
  std::atomic<long> longest_ms_{0};
  std::thread accepter_;
  std::vector<std::thread> connections_;  ///< touched by the accept thread only, joined at the end
};

/// A TCP relay from listen_host:port to target_host:port (a fake trainer that forwards
/// whatever it is sent, the controller's challenge included, to a real one), bytes untouched.
class RelayPeer {
 public:
  RelayPeer(const std::string& host, const std::string& target, int port) : target_(target), port_(port) {
    listener_ = testing::listen_tcp(host, port);
    bound_ = listener_ >= 0;
    accepter_ = std::thread([this] { accept_loop(); });
  }
  ~RelayPeer() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    accepter_.join();
    for (auto& t : connections_) t.join();
  }
  RelayPeer(const RelayPeer&) = delete;
  RelayPeer& operator=(const RelayPeer&) = delete;
  bool bound() const { return bound_; }
  int relayed() const { return relayed_.load(); }

 private:
  void accept_loop() {
    while (!stop_) {
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      connections_.emplace_back([this, client] { relay(client); });
    }
  }
  void relay(int client) {
    const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sockaddr_in a = testing::ipv4_address(target_, port_);
    if (::connect(upstream, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
      ++relayed_;
      pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
      char buffer[16384];
      while (!stop_ && ::poll(fds, 2, 200) >= 0) {
        bool done = false;
        for (int i = 0; i < 2 && !done; ++i) {
          if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
          const ssize_t n = ::recv(fds[i].fd, buffer, sizeof buffer, 0);
          done = n <= 0 || ::send(fds[1 - i].fd, buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n;
        }
        if (done) break;
      }
    }
    ::close(upstream);
    ::close(client);
  }

  std::string target_;
  int port_;
  int listener_ = -1;
  bool bound_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<int> relayed_{0};
  std::thread accepter_;
  std::vector<std::thread> connections_;  ///< touched by the accept thread only, joined at the end
};

std::string be32_bytes(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

/// A valid PNG of w x h pixels, 16-bit RGBA, all zero: a small file that declares a huge image.
std::string zero_png(std::uint32_t w, std::uint32_t h) {
  const std::string raw(static_cast<std::size_t>(h) * (1 + std::size_t{w} * 8), '\0');
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string packed(size, '\0');
  compress2(reinterpret_cast<Bytef*>(packed.data()), &size, reinterpret_cast<const Bytef*>(raw.data()),
            static_cast<uLong>(raw.size()), 9);
  packed.resize(size);
  const auto chunk = [](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    return be32_bytes(static_cast<std::uint32_t>(data.size())) + body +
           be32_bytes(static_cast<std::uint32_t>(
               crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
  };
  const std::string ihdr = be32_bytes(w) + be32_bytes(h) + std::string("\x10\x06\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", packed) + chunk("IEND", "");
}

/// A 28 x 28 grey PNG whose image data inflates to 256 MiB of zeros, with its zlib header's
/// window size set to the invalid CINFO=8 (zlib refuses such a stream; stb_image does not).
std::string png_bomb_with_an_invalid_window() {
  z_stream z{};
  deflateInit(&z, 9);
  std::string packed;
  const std::string block(1 << 20, '\0');
  unsigned char out[1 << 16];
  for (int mb = 0; mb <= 256; ++mb) {
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(block.data()));
    z.avail_in = mb < 256 ? static_cast<uInt>(block.size()) : 0;
    do {
      z.next_out = out;
      z.avail_out = sizeof out;
      deflate(&z, mb < 256 ? Z_NO_FLUSH : Z_FINISH);
      packed.append(reinterpret_cast<char*>(out), sizeof out - z.avail_out);
    } while (z.avail_out == 0 || z.avail_in > 0);
  }
  deflateEnd(&z);
  const unsigned cmf = 8u << 4 | 8;  // CINFO=8, deflate
  unsigned flg = static_cast<unsigned char>(packed[1]) & 0xE0;
  flg += 31 - (cmf * 256 + flg) % 31;
  packed[0] = static_cast<char>(cmf);
  packed[1] = static_cast<char>(flg);
  const auto chunk = [](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    return be32_bytes(static_cast<std::uint32_t>(data.size())) + body +
           be32_bytes(static_cast<std::uint32_t>(
               crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
  };
  const std::string ihdr = be32_bytes(28) + be32_bytes(28) + std::string("\x08\x00\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", packed) + chunk("IEND", "");
}

/// The first `keep` bytes of a progressive JPEG of w x h grey pixels.
std::string truncated_progressive_jpeg(int w, int h, std::size_t keep) {
  std::vector<unsigned char> grey(static_cast<std::size_t>(w) * h);
  for (std::size_t i = 0; i < grey.size(); ++i) grey[i] = static_cast<unsigned char>(i * 7);
  tjhandle tj = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  tjCompress2(tj, grey.data(), w, 0, h, TJPF_GRAY, &jpeg, &size, TJSAMP_GRAY, 75, TJFLAG_PROGRESSIVE);
  std::string out(reinterpret_cast<const char*>(jpeg), std::min<std::size_t>(size, keep));
  tjFree(jpeg);
  tjDestroy(tj);
  return out;
}

long rss_mb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6)) / 1024;
  }
  return -1;
}

class FaultsTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
    disk_ = std::make_unique<testing::SmallDisk>(home_ / "disk", "1m");
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
    std::vector<std::string> args{"--host",       address,
                                  "--port",       std::to_string(controller_port_),
                                  "--subnet",     "127.0.0.0/29",
                                  "--train-port", std::to_string(train_port_),
                                  "--home-dir",   disk_->path().string(),
                                  "--data-dir",   MLSWARM_DATA_DIR,
                                  "--drain-ms",   "200"};
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

  std::unique_ptr<testing::SmallDisk> disk_;
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
  // Issue 38: each election retry under the full disk (every 250 ms) logged its error. The disk
  // stays full 3 s (the length of the outage is the experiment, not a wait for anything):
  // the error is logged once, with the number of repeats on its next line a minute later.
  const std::size_t log_before = controller_->log().size();
  std::this_thread::sleep_for(3s);
  const std::string during = controller_->log().substr(log_before);
  std::size_t election_lines = 0;
  for (auto at = during.find("election:"); at != std::string::npos; at = during.find("election:", at + 1)) {
    ++election_lines;
  }
  EXPECT_LE(election_lines, 1u) << "election errors logged in 3 s of full disk:\n" << during;
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
      << "the woken leader must step down: " << role_a().dump() << "\n"
      << controller_->log();
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
  EXPECT_GT(refused, 0) << "no claim met the full disk";
  EXPECT_THROW(AttemptFence(job_dir, claimed - 1).guarded([] {}), Error) << "an older attempt is still stale";
  disk_->free();
  AttemptFence(job_dir, claimed + 1).claim();
  EXPECT_EQ(AttemptFence::current(job_dir), claimed + 1);
}

// Issue 28, case 4: one host answering GET /type with a lying Content-Length made every
// discovery pass end in std::bad_alloc (a new trainer was never listed, a dead one's job stayed
// running); an endless body was read for seconds, hundreds of MB. Whatever these hosts send, a
// probe ends within its deadline and 8 KiB, and discovery goes on. No tmpfs needed.
TEST_F(ClusterTest, HostileHostsOnTheSubnetNeitherBlindNorBloatDiscovery) {
  using Mode = HostilePeer::Mode;
  std::vector<std::unique_ptr<HostilePeer>> peers;
  int host = 4;
  for (Mode mode : {Mode::kLyingLength, Mode::kEndlessBody, Mode::kByteASecond, Mode::kEndlessHeaders}) {
    peers.push_back(std::make_unique<HostilePeer>("127.0.0." + std::to_string(host++), train_port_, mode));
    ASSERT_TRUE(peers.back()->bound());
  }
  start_trainer(2);
  start_controller();
  ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 10s)) << get("/status").dump();
  const long rss_before = rss_mb(controller_->pid());
  const auto started = std::chrono::steady_clock::now();
  start_trainer(3);
  ASSERT_TRUE(eventually([&] { return trainer_count() == 2; }, 10s))
      << "a new trainer must be listed: " << get("/status").dump();
  const double listed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // A few more passes against the hostile hosts, then their connections are measured.
  for (auto& p : peers) {
    const int seen = p->connections();
    ASSERT_TRUE(eventually([&] { return p->connections() >= seen + 3; }, 20s));
  }
  const long rss_after = rss_mb(controller_->pid());
  json status = get("/status");
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& t : status["trainers"]) {
    EXPECT_LT(now - t.value("last_seen", 0.0), 3.0) << "stale trainer: " << t.dump();
  }
  std::cout << "hostile hosts: new trainer listed in " << listed_s << " s; controller RSS " << rss_before << " -> "
            << rss_after << " MB; longest probe connection (s): lying length " << peers[0]->longest_s()
            << ", endless body " << peers[1]->longest_s() << ", a byte a second " << peers[2]->longest_s()
            << ", endless headers " << peers[3]->longest_s() << "\n";
  EXPECT_LT(listed_s, 5.0);
  EXPECT_LT(rss_after - rss_before, 64) << "MB the controller grew by";
  for (auto& p : peers) EXPECT_LT(p->longest_s(), 2.0) << "a probe outlived its 0.8 s deadline";
  // A trainer that dies is still noticed: its job is re-queued and runs on the other.
  const std::string id = submit("hostile", 3000, 3);
  ASSERT_TRUE(eventually([&] { return job_in(id, "running") && !job(id).value("trainer", "").empty(); }, 20s))
      << job(id).dump();
  const std::string on = job(id).value("trainer", "");
  const int victim = on.rfind("127.0.0.3", 0) == 0 ? 3 : 2;
  const auto killed = std::chrono::steady_clock::now();
  trainers_[victim]->signal(SIGKILL);
  ASSERT_TRUE(eventually([&] { return job(id).value("attempts", 0) >= 2 || job_in(id, "succeeded"); }, 30s))
      << job(id).dump();
  const double requeued_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::cout << "hostile hosts: a killed trainer's job was dispatched again after " << requeued_s << " s\n";
  EXPECT_LT(requeued_s, 10.0);
}

// Issue 28, cases 5 and 6: a fake trainer on another address of the same machine relayed the
// controller's challenge to a real trainer, which proved it (it proved for any address the
// machine owns): the fake was listed ready and got dispatches. And a signed dispatch made for
// one trainer was taken by another on the same host. A proof and a signature now bind the exact
// address and port the caller dialed.
TEST_F(ClusterTest, ARelayedProofOrADispatchForAnotherTrainerIsRefused) {
  const std::string key = "cluster-key-relay-5e1b";
  const auto key_file = write_secret(home_, "cluster_key", key);
  start_trainer(2, {"--cluster-token-file", key_file.string()});
  start_trainer(3, {"--cluster-token-file", key_file.string()});
  RelayPeer relay("127.0.0.9", "127.0.0.2", train_port_);
  ASSERT_TRUE(relay.bound());
  start_controller({"--cluster-token-file", key_file.string()});
  const std::string fake = "127.0.0.9:" + std::to_string(train_port_);
  ASSERT_TRUE(eventually([&] { return trainer_count() >= 2 && relay.relayed() >= 3; }, 15s)) << get("/status").dump();
  const json status = get("/status");
  for (const auto& t : status["trainers"]) {
    if (t["address"] == fake) {
      EXPECT_EQ(t["trusted"], false) << "the relay proved the key through a real trainer: " << t.dump();
      EXPECT_EQ(t["state"], "untrusted") << t.dump();
    }
  }
  // Every job goes to a real trainer, never through the relay.
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(submit("relay-" + std::to_string(i), 500));
  for (const auto& id : ids) {
    ASSERT_TRUE(eventually([&] { return job_in(id, "succeeded"); }, 120s)) << job(id).dump();
    EXPECT_NE(job(id)["trainer"], fake);
  }

  // A dispatch signed for 127.0.0.2, sent to 127.0.0.3 (a capture replayed to another trainer
  // of the same host): refused, nothing starts.
  const std::string target = "127.0.0.2:" + std::to_string(train_port_);
  const std::string body = json{
      {"job_id", "replayed"},
      {"model_id", "replayed"},
      {"example_idxs", {0, 500}},
      {"test_idxs", {0, kTestImages}},
      {"attempt", 1}}.dump();
  httplib::Headers headers;
  for (const auto& [name, value] :
       sign_request(key, "POST", "/train", target, body, static_cast<long long>(std::time(nullptr))))
    headers.emplace(name, value);
  headers.emplace("Host", target);
  httplib::Client other("127.0.0.3", train_port_);
  auto res = other.Post("/train", headers, body, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403) << res->body;
  httplib::Client trainer3("127.0.0.3", train_port_);
  EXPECT_EQ(testing::get_json(trainer3, "/status").dump().find("replayed"), std::string::npos);
}

// Issue 28, case 6 (after a restart): the nonces a trainer has seen live in its memory, so a
// signed dispatch captured on the wire and replayed after the trainer restarted was taken again
// and trained its attempt a second time. The attempt now starts on the job's fence on HOME_DIR
// before the trainer takes it, and a dispatch that meets its own attempt there is refused.
TEST_F(ClusterTest, ADispatchReplayedAfterTheTrainerRestartsIsRefused) {
  const std::string key = "cluster-key-replay-77c2";
  const auto key_file = write_secret(home_, "cluster_key", key);
  start_trainer(2, {"--cluster-token-file", key_file.string()});
  const std::string target = "127.0.0.2:" + std::to_string(train_port_);
  const std::string body = json{
      {"job_id", "captured"},
      {"model_id", "captured"},
      {"example_idxs", {0, 500}},
      {"test_idxs", {0, kTestImages}},
      {"attempt", 1}}.dump();
  httplib::Headers headers;  // the capture: one signed dispatch, sent as often as an attacker likes
  for (const auto& [name, value] :
       sign_request(key, "POST", "/train", target, body, static_cast<long long>(std::time(nullptr)))) {
    headers.emplace(name, value);
  }
  headers.emplace("Host", target);
  const auto send = [&] {
    httplib::Client trainer("127.0.0.2", train_port_);
    auto res = trainer.Post("/train", headers, body, "application/json");
    return res ? res->status : -1;
  };
  ASSERT_EQ(send(), 202);
  EXPECT_EQ(send(), 403) << "a replay to the same running trainer";
  trainers_[2]->signal(SIGKILL);
  trainers_.erase(2);
  start_trainer(2, {"--cluster-token-file", key_file.string()});
  EXPECT_EQ(send(), 409) << "the replay after a restart was taken again";
  httplib::Client trainer("127.0.0.2", train_port_);
  EXPECT_EQ(testing::get_json(trainer, "/status").dump().find("captured"), std::string::npos);
  EXPECT_NE(trainers_[2]->log().find("attempt 1 of job captured already started"), std::string::npos)
      << trainers_[2]->log();
}

/// Connections that each send a request a byte at a time, all from one thread, and note when
/// the server closed each one.
class Tricklers {
 public:
  /// `count` connections to 127.0.0.1:port that send `head` at once and then `slow` one byte
  /// every `every`.
  Tricklers(int port, int count, std::string head, std::string slow, std::chrono::milliseconds every)
      : head_(std::move(head)), slow_(std::move(slow)) {
    const sockaddr_in a = testing::ipv4_address("127.0.0.1", port);
    for (int i = 0; i < count; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        continue;
      }
      fds_.push_back(fd);
    }
    closed_at_.assign(fds_.size(), -1.0);
    started_ = std::chrono::steady_clock::now();
    thread_ = std::thread([this, every] { run(every); });
  }
  ~Tricklers() {
    stop_ = true;
    thread_.join();
    for (int fd : fds_) ::close(fd);
  }
  Tricklers(const Tricklers&) = delete;
  Tricklers& operator=(const Tricklers&) = delete;

  std::size_t connected() const { return fds_.size(); }
  std::size_t closed() const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::count_if(closed_at_.begin(), closed_at_.end(), [](double t) { return t >= 0; }));
  }
  /// Seconds from the start to the last close (of those closed).
  double last_close_s() const {
    std::lock_guard lock(mutex_);
    return *std::max_element(closed_at_.begin(), closed_at_.end());
  }

 private:
  void run(std::chrono::milliseconds every) {
    for (int fd : fds_) ::send(fd, head_.data(), head_.size(), MSG_NOSIGNAL);
    for (std::size_t sent = 0; !stop_; ++sent) {
      const auto tick = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < fds_.size(); ++i) {
        {
          std::lock_guard lock(mutex_);
          if (closed_at_[i] >= 0) continue;
        }
        char b[4096];
        const ssize_t got = ::recv(fds_[i], b, sizeof b, MSG_DONTWAIT);  // a reply (408, 400) is fine
        const bool eof = got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        const bool send_failed = !eof &&
                                 ::send(fds_[i], &slow_[sent % slow_.size()], 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
                                 errno != EAGAIN && errno != EWOULDBLOCK;
        if (eof || send_failed) {
          std::lock_guard lock(mutex_);
          closed_at_[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
        }
      }
      while (!stop_ && std::chrono::steady_clock::now() - tick < every) std::this_thread::sleep_for(10ms);
    }
  }

  std::string head_;
  std::string slow_;
  std::vector<int> fds_;
  mutable std::mutex mutex_;
  std::vector<double> closed_at_;
  std::chrono::steady_clock::time_point started_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// `probe` got a 200 for `path` within 1 s.
bool answers_in_time(httplib::Client& probe, const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  auto res = probe.Get(path.c_str());
  return res && res->status == 200 && std::chrono::steady_clock::now() - t0 < 1s;
}

// Twice HTTP_THREADS heads, a byte every 300 ms: workers stay free, every one is closed
// about 10 s after its first byte (the head's deadline), never later.
void expect_trickled_heads_hold_no_worker(httplib::Client& probe, int controller_port, int threads) {
  Tricklers heads(controller_port, 2 * threads, "G", "ET /status HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa", 300ms);
  ASSERT_EQ(heads.connected(), 2u * threads);
  int probes = 0;
  int answered = 0;
  const auto until = std::chrono::steady_clock::now() + 8s;
  while (std::chrono::steady_clock::now() < until) {
    ++probes;
    answered += answers_in_time(probe, "/healthz") && answers_in_time(probe, "/status") ? 1 : 0;
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_EQ(answered, probes) << "/healthz or /status waited behind clients trickling their heads";
  EXPECT_TRUE(eventually([&] { return heads.closed() == heads.connected(); }, 8s))
      << heads.closed() << " of " << heads.connected() << " trickled heads closed";
  std::cout << "slow clients: " << heads.connected() << " trickled heads closed after at most " << heads.last_close_s()
            << " s; /healthz and /status answered " << answered << " of " << probes << " times within 1 s\n";
  EXPECT_GT(heads.last_close_s(), 9.0);
  EXPECT_LT(heads.last_close_s(), 12.0);
}

// Twice HTTP_THREADS bodies, a byte every 300 ms: they hold every worker, but each for at
// most REQUEST_TIMEOUT_S, and /healthz answers all along.
void expect_trickled_bodies_hold_workers_briefly(httplib::Client& probe, int controller_port, int threads) {
  Tricklers bodies(controller_port, 2 * threads,
                   "POST /train HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{",
                   "\"a\": 1, ", 300ms);
  ASSERT_EQ(bodies.connected(), 2u * threads);
  int probes = 0;
  int answered = 0;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    ++probes;
    answered += answers_in_time(probe, "/healthz") ? 1 : 0;
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_EQ(answered, probes) << "/healthz waited behind clients trickling their bodies";
  EXPECT_TRUE(eventually([&] { return bodies.closed() == bodies.connected(); }, 10s))
      << bodies.closed() << " of " << bodies.connected() << " trickled bodies closed";
  std::cout << "slow clients: " << bodies.connected() << " trickled bodies (" << threads
            << " workers, 3 s each) closed after at most " << bodies.last_close_s() << " s; /healthz answered "
            << answered << " of " << probes << " times within 1 s\n";
  EXPECT_LT(bodies.last_close_s(), 10.0);
}

// Issue 28, case 7: 8 connections sending one header byte every 5 s held all 8 HTTP threads of
// a controller for as long as they liked (the 10 s timeout was per read) and /healthz timed
// out. Now a worker gets a connection only once its head is complete, the head has 10 s from
// its first byte, a body and a reply each REQUEST_TIMEOUT_S, and health probes have a worker
// of their own.
TEST_F(ClusterTest, SlowClientsHoldNoWorkerAndHealthProbesAnswer) {
  constexpr int kThreads = 4;
  start_controller({"--http-threads", std::to_string(kThreads), "--request-timeout-s", "3"});
  httplib::Client probe("127.0.0.1", controller_port_);
  probe.set_connection_timeout(1s);
  probe.set_read_timeout(1s);
  probe.set_keep_alive(false);

  ASSERT_NO_FATAL_FAILURE(expect_trickled_heads_hold_no_worker(probe, controller_port_, kThreads));
  ASSERT_NO_FATAL_FAILURE(expect_trickled_bodies_hold_workers_briefly(probe, controller_port_, kThreads));
  EXPECT_TRUE(answers_in_time(probe, "/status"));
  EXPECT_NE(controller_->log().find("whose request did not arrive within its deadline (head 10000 ms"),
            std::string::npos);
}

/// POST /classify of `image` for the model hostile-requests: the status and the JSON body
/// (-1 when nothing came back).
std::pair<int, json> classify(httplib::Client& client, const std::string& image, const std::string& type) {
  httplib::MultipartFormDataItems items{{"image", image, "upload", type}, {"model_id", "hostile-requests", "", ""}};
  auto res = client.Post("/classify", items);
  return res ? std::make_pair(res->status, json::parse(res->body, nullptr, false)) : std::make_pair(-1, json());
}

/// A 4096 x 4096 PNG of zeros (8 times) and a truncated progressive JPEG: refused, and the
/// controller (process `pid`) barely grows.
void expect_oversized_images_refused_cheaply(httplib::Client& client, pid_t pid) {
  const long rss_before = rss_mb(pid);
  const std::string png = zero_png(4096, 4096);
  std::cout << "a 4096 x 4096 16-bit RGBA PNG of " << png.size() << " bytes\n";
  for (int i = 0; i < 8; ++i) {
    auto [status, body] = classify(client, png, "image/png");
    ASSERT_EQ(status, 400) << body.dump();
    EXPECT_NE(body.dump().find("MAX_IMAGE_PIXELS"), std::string::npos) << body.dump();
  }
  auto [jpeg_status, jpeg_body] = classify(client, truncated_progressive_jpeg(4096, 4096, 2048), "image/jpeg");
  EXPECT_EQ(jpeg_status, 400) << jpeg_body.dump();
  const long rss_after = rss_mb(pid);
  std::cout << "oversized images: controller RSS " << rss_before << " -> " << rss_after << " MB\n";
  EXPECT_LT(rss_after - rss_before, 64) << "MB the controller grew by";
}

// Issue 38: a PNG bomb whose zlib header declares an invalid window (CINFO=8) got through the
// bomb check (zlib refused the header and the check let the file pass; stb_image inflated all
// 256 MiB): /classify answered 200 with +290 MB of peak memory. Four at once now: four 400s.
void expect_png_bombs_refused(httplib::Client& client, pid_t pid) {
  const std::string bomb = png_bomb_with_an_invalid_window();
  const long peak_before = peak_rss_kib(pid);
  std::vector<std::thread> senders;
  std::atomic<int> refused{0};
  for (int i = 0; i < 4; ++i) {
    senders.emplace_back([&] {
      auto [status, body] = classify(client, bomb, "image/png");
      refused += status == 400 && body.dump().find("zlib") != std::string::npos ? 1 : 0;
    });
  }
  for (auto& t : senders) t.join();
  const long grew_mb = (peak_rss_kib(pid) - peak_before) / 1024;
  std::cout << "four PNG bombs (CINFO=8, " << bomb.size() << " bytes, 256 MiB inflated) at once: " << refused
            << " refused; peak RSS +" << grew_mb << " MB\n";
  EXPECT_EQ(refused, 4);
  EXPECT_LT(grew_mb, 64);
}

// Issue 38: a 60 MB /predict or v2 body of 30 million numbers cost +1.05 GB and 11 s of CPU
// before its 400. Values are counted while parsing and refused at PREDICT_MAX_VALUES.
void expect_json_floods_refused_at_their_limit(httplib::Client& client, pid_t pid) {
  std::string numbers;
  numbers.reserve(60u << 20);
  for (int i = 0; i < 30'000'000; ++i) numbers += i > 0 ? ",0" : "0";
  const std::string predict = R"({"model_id": "hostile-requests", "examples": [[)" + numbers + "]]}";
  const std::string v2 =
      R"({"inputs": [{"name": "x", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [)" + numbers + "]}]}";
  numbers = std::string();
  for (const auto& [path, body] :
       {std::pair<std::string, const std::string*>{"/predict", &predict}, {"/v2/models/hostile-requests/infer", &v2}}) {
    const long peak_before = peak_rss_kib(pid);
    const auto t0 = std::chrono::steady_clock::now();
    auto res = client.Post(path.c_str(), *body, "application/json");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(res) << path;
    const long grew_mb = (peak_rss_kib(pid) - peak_before) / 1024;
    std::cout << path << " with " << body->size() / 1000000 << " MB of 30 million numbers: " << res->status << " in "
              << seconds << " s, peak RSS +" << grew_mb << " MB\n";
    EXPECT_EQ(res->status, 413) << res->body.substr(0, 300);
    EXPECT_LT(grew_mb, 4 * static_cast<long>(body->size() >> 20))
        << "MB for a body of " << (body->size() >> 20) << " MB";
  }
}

// KServe v2: a valid input, then each bad part of the request.
void expect_bad_kserve_requests_refused(httplib::Client& client) {
  json input = {
      {"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "FP32"}, {"data", std::vector<float>(28 * 28, 0.5F)}};
  const auto infer = [&](const json& request) {
    return testing::post_json(client, "/v2/models/hostile-requests/infer", request.dump());
  };
  EXPECT_EQ(infer({{"inputs", {input}}}).first, 200);
  json outputs = json::array();
  for (int i = 0; i < 200000; ++i) outputs.push_back({{"name", "probabilities"}});
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(infer({{"inputs", {input}}, {"outputs", outputs}}).first, 400) << "200,000 outputs";
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), 2.0);
  json numeric_type = input;
  numeric_type["datatype"] = 5;
  EXPECT_EQ(infer({{"inputs", {numeric_type}}}).first, 400) << "datatype 5";
  EXPECT_EQ(infer({{"inputs", {input}}, {"parameters", {{"binary_data_output", "yes"}}}}).first, 400)
      << "binary_data_output \"yes\"";
  const json wide = {{"name", "probabilities"}, {"parameters", {{"classification", 4294967297LL}}}};
  EXPECT_EQ(infer({{"inputs", {input}}, {"outputs", {wide}}}).first, 400) << "classification 4294967297";
}

// Wrong tokens: refused, and the log does not grow a line per request.
void expect_wrong_tokens_refused_quietly(ChildProcess& controller, int controller_port) {
  const std::string log_before = controller.log();
  const auto lines_before = std::count(log_before.begin(), log_before.end(), '\n');
  httplib::Client wrong("127.0.0.1", controller_port);
  wrong.set_bearer_token_auth("not-the-token");
  for (int i = 0; i < 300; ++i) {
    auto res = wrong.Get("/status");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 403);
  }
  const std::string log = controller.log();
  const auto lines_after = std::count(log.begin(), log.end(), '\n');
  EXPECT_LE(lines_after - lines_before, 3) << "lines logged for 300 wrong tokens";
}

// Issue 28, cases 8 and 9: uploads and requests that cost far more than they weigh, or that
// crashed a parser into a 500. Each is a clear 400 now, and costs the controller little.
TEST_F(ClusterTest, HostileRequestsGetA400AndCostLittle) {
  const std::string token = "api-token-hostile-29c4";
  const auto token_file = write_secret(home_, "api_token", token);
  start_trainer(2);
  start_controller({"--api-token-file", token_file.string()});
  client_->set_bearer_token_auth(token);
  ASSERT_TRUE(eventually([&] { return trainer_count() == 1; }, 10s));
  const std::string id = submit("hostile-requests", 500);
  ASSERT_TRUE(eventually([&] { return job_in(id, "succeeded"); }, 120s)) << job(id).dump();

  ASSERT_NO_FATAL_FAILURE(expect_oversized_images_refused_cheaply(*client_, controller_->pid()));
  ASSERT_NO_FATAL_FAILURE(expect_png_bombs_refused(*client_, controller_->pid()));
  ASSERT_NO_FATAL_FAILURE(expect_json_floods_refused_at_their_limit(*client_, controller_->pid()));
  expect_bad_kserve_requests_refused(*client_);
  ASSERT_NO_FATAL_FAILURE(expect_wrong_tokens_refused_quietly(*controller_, controller_port_));
  EXPECT_TRUE(controller_->running());
}

// Issue 28, done when: chaos on everything at once. Three trainers and two controller replicas
// on one HOME_DIR (a tmpfs), a hostile host on the subnet, jobs submitted to either replica all
// along, and every second a chance of: a trainer SIGKILLed (restarted 1-3 s later) or SIGSTOPped
// (2-8 s), a controller SIGKILLed (restarted 1-3 s later) or SIGSTOPped (2-8 s), the disk filled
// (2-6 s). Then everything recovers. Every job answered 202 must end succeeded exactly once (one
// "succeeded" record in the journal, the model written by the attempt the controller recorded),
// and each term must have had one leader. MLSWARM_CHAOS_SECONDS sets the length (60 in CI; the
// documented run is 300).
/// Jobs submitted from a thread of their own, one every 3 s, each to a random one of the
/// controller replicas; remembers which were answered 202 and how the others were answered.
class Submitter {
 public:
  Submitter(std::vector<std::string> hosts, int port) : hosts_(std::move(hosts)), port_(port) {
    thread_ = std::thread([this] { run(); });
  }
  ~Submitter() { stop(); }
  Submitter(const Submitter&) = delete;
  Submitter& operator=(const Submitter&) = delete;

  void stop() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<std::string> accepted() const {
    std::lock_guard lock(mutex_);
    return accepted_;
  }
  /// By status ("unanswered": no reply within 10 s).
  std::map<std::string, int> refused() const {
    std::lock_guard lock(mutex_);
    return refused_;
  }

 private:
  void run() {
    std::mt19937 rng(7);
    for (int n = 0; running_; ++n) {
      const std::string id = "chaos-" + std::to_string(n);
      httplib::Client c(hosts_[rng() % hosts_.size()], port_);
      c.set_connection_timeout(2s);
      c.set_read_timeout(10s);
      const json spec{{"job_id", id},
                      {"model_id", id},
                      {"example_idxs", {0, 400}},
                      {"test_idxs", {0, kTestImages}},
                      {"train_opts", {{"epochs", 2}, {"batch_size", 64}}}};
      auto res = c.Post("/train", spec.dump(), "application/json");
      {
        std::lock_guard lock(mutex_);
        if (res && res->status == 202) {
          accepted_.push_back(id);
        } else {
          ++refused_[res ? std::to_string(res->status) : "unanswered"];
        }
      }
      const auto next = std::chrono::steady_clock::now() + 3s;
      while (running_ && std::chrono::steady_clock::now() < next) std::this_thread::sleep_for(50ms);
    }
  }

  std::vector<std::string> hosts_;
  int port_;
  mutable std::mutex mutex_;
  std::vector<std::string> accepted_;
  std::map<std::string, int> refused_;
  std::atomic<bool> running_{true};
  std::thread thread_;
};

class ChaosTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
    // About 11 MiB a job (its checkpoints, versions and latest model) and a job every 3 s: room
    // for every job of the run, so that only the test's filling makes the disk full.
    disk_size_ = std::to_string(std::max(512, 6 * chaos_seconds())) + "m";
    disk_ = std::make_unique<testing::SmallDisk>(home_ / "disk", disk_size_.c_str());
    if (!disk_->mounted()) GTEST_SKIP() << "cannot mount a tmpfs here";
    key_file_ = write_secret(home_, "cluster_key", "chaos-cluster-key-41d7");
  }
  void TearDown() override {
    for (auto& [name, p] : processes_) {
      if (p && p->pid() > 0) ::kill(p->pid(), SIGCONT);
    }
    if (HasFailure()) {
      for (auto& [name, p] : processes_) std::cerr << "--- " << name << " log (tail) ---\n" << tail(p->log(), 6000);
    }
    processes_.clear();
    disk_.reset();
  }
  static int chaos_seconds() {
    const char* env = std::getenv("MLSWARM_CHAOS_SECONDS");
    return env != nullptr ? std::max(10, std::atoi(env)) : 60;
  }
  static std::string tail(const std::string& text, std::size_t n) {
    return text.size() <= n ? text : text.substr(text.size() - n);
  }
  /// Starts (or restarts) "trainer-<i>" or "controller-<i>" on 127.0.0.<i>.
  void start(const std::string& name) {
    const bool trainer = name.rfind("trainer-", 0) == 0;
    const std::string host = "127.0.0." + name.substr(name.find('-') + 1);
    const int port = trainer ? train_port_ : controller_port_;
    std::vector<std::string> args{"--host",
                                  host,
                                  "--port",
                                  std::to_string(port),
                                  "--home-dir",
                                  disk_->path().string(),
                                  "--data-dir",
                                  MLSWARM_DATA_DIR,
                                  "--cluster-token-file",
                                  key_file_.string()};
    if (trainer) {
      args.insert(args.end(), {"--threads", "1"});
    } else {
      args.insert(args.end(),
                  {"--subnet", "127.0.0.0/29", "--train-port", std::to_string(train_port_), "--scan-interval-ms", "500",
                   "--max-misses", "2", "--max-attempts", "50", "--drain-ms", "200"});
    }
    // Every daemon under a low file limit (prlimit: soft and hard), as a small container might be.
    args.insert(args.begin(), {"--nofile=512:512", trainer ? ML_TRAINER_BIN : ML_CONTROLLER_BIN});
    processes_[name].reset();
    processes_[name] = std::make_unique<ChildProcess>("/usr/bin/prlimit", args, home_ / (name + ".log"));
    httplib::Client probe(host, port);
    probe.set_connection_timeout(1s);
    EXPECT_TRUE(eventually([&] { return probe.Get("/healthz") != nullptr; }, 20s)) << name;
  }
  static std::string host_of(const std::string& name) { return "127.0.0." + name.substr(name.find('-') + 1); }
  /// GET on a controller replica that answers (the first of `order`).
  json read(const std::string& path) {
    for (const char* c : {"controller-1", "controller-11"}) {
      httplib::Client client(host_of(c), controller_port_);
      client.set_connection_timeout(1s);
      client.set_read_timeout(5s);
      auto res = client.Get(path.c_str());
      if (res && res->status == 200) return json::parse(res->body, nullptr, false);
    }
    return json::object();
  }

  const std::vector<std::string> kTrainers{"trainer-2", "trainer-3", "trainer-4"};
  const std::vector<std::string> kControllers{"controller-1", "controller-11"};

  /// A disruption under way, and how it ends.
  struct Pending {
    std::chrono::steady_clock::time_point at;
    std::string target;
    std::string undo;  ///< "restart", "continue", "free"
  };
  void undo(const Pending& p) {
    if (p.undo == "restart") start(p.target);
    if (p.undo == "continue") ::kill(processes_[p.target]->pid(), SIGCONT);
    if (p.undo == "free") disk_->free();
    std::lock_guard lock(disrupted_mutex_);
    disrupted_.erase(p.target);
  }
  /// Marks a daemon down (killed or stopped) before it is: the prober leaves it alone.
  void disrupt(const std::string& target) {
    std::lock_guard lock(disrupted_mutex_);
    disrupted_.insert(target);
  }
  bool disrupted(const std::string& target) {
    std::lock_guard lock(disrupted_mutex_);
    return disrupted_.contains(target);
  }

  /// Each second, maybe one disruption of something not already disrupted (about one every
  /// 3 s); each ends by itself after a while, and all have ended when this returns. One
  /// controller replica is always left alone. Returns how many of each kind there were.
  std::map<std::string, int> run_chaos(int seconds) {
    std::vector<Pending> pending;
    std::map<std::string, int> done;
    std::mt19937 rng(20261204);
    const auto seconds_in = [&](int lo, int hi) {
      return std::chrono::seconds(lo + static_cast<int>(rng() % (hi - lo + 1)));
    };
    const auto busy = [&](const std::string& target) {
      return std::any_of(pending.begin(), pending.end(), [&](const Pending& p) { return p.target == target; });
    };
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(1s);
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(pending, [&](const Pending& p) { return p.at <= now && (undo(p), true); });
      if (rng() % 3 != 0) continue;
      const int kind = static_cast<int>(rng() % 5);
      if (kind == 4) {
        if (busy("disk")) continue;
        disk_->fill();
        pending.push_back({now + seconds_in(2, 6), "disk", "free"});
        ++done["disk filled"];
        continue;
      }
      const bool trainer = kind < 2;
      const auto& group = trainer ? kTrainers : kControllers;
      const std::string target = group[rng() % group.size()];
      const bool a_controller_is_down = !trainer && std::any_of(kControllers.begin(), kControllers.end(), busy);
      if (busy(target) || a_controller_is_down) continue;
      disrupt(target);
      if (kind % 2 == 0) {
        processes_[target]->signal(SIGKILL);
        processes_[target]->wait_exit(10s);
        pending.push_back({now + seconds_in(1, 3), target, "restart"});
        ++done[trainer ? "trainer SIGKILL" : "controller SIGKILL"];
      } else {
        processes_[target]->signal(SIGSTOP);
        pending.push_back({now + seconds_in(2, 8), target, "continue"});
        ++done[trainer ? "trainer SIGSTOP" : "controller SIGSTOP"];
      }
    }
    for (const auto& p : pending) undo(p);
    return done;
  }

  /// How many "succeeded" records the journal holds for each job.
  std::map<std::string, int> succeeded_records() {
    std::map<std::string, int> records;
    std::map<std::string, std::string> state_of;
    std::ifstream journal(disk_->path() / "controller" / "jobs.jsonl");
    std::string line;
    while (std::getline(journal, line)) {
      const json r = json::parse(line, nullptr, false);
      if (!r.is_object()) continue;
      const std::string id = r.value("job_id", "");
      const std::string state = r.value("state", "");
      if (state == "succeeded" && state_of[id] != "succeeded") ++records[id];
      state_of[id] = state;
    }
    return records;
  }

  /// Prints a row per job; returns how many succeeded exactly once: state succeeded, one
  /// "succeeded" record in the journal, meta.json written by the attempt the controller recorded.
  int count_succeeded_once(const std::vector<std::string>& ids) {
    std::map<std::string, int> records = succeeded_records();
    std::cout << "  | job | state | attempts | succeeded records | model written by attempt |\n";
    int ok = 0;
    for (const auto& id : ids) {
      const json j = read("/jobs/" + id);
      json meta = json::object();
      std::ifstream meta_file(disk_->path() / "models" / id / "meta.json");
      if (meta_file) meta = json::parse(meta_file, nullptr, false);
      const int attempts = j.value("attempts", 0);
      const int model_attempt = meta.is_object() ? meta.value("attempt", -1) : -1;
      const bool once = j.value("state", "") == "succeeded" && records[id] == 1 && model_attempt == attempts &&
                        meta.value("job_id", "") == id;
      ok += once ? 1 : 0;
      std::cout << "  | " << id << " | " << j.value("state", "?") << " | " << attempts << " | " << records[id] << " | "
                << model_attempt << " |" << (once ? "" : "  <-- NOT exactly once") << "\n";
    }
    return ok;
  }

  /// One leader per term, from the replicas' own "leading term N" lines; prints them, returns
  /// how many terms there were.
  std::size_t check_one_leader_per_term() {
    std::map<unsigned long, std::vector<std::string>> leaders;
    const std::regex leading("controller: leading term ([0-9]+)");
    for (const auto& c : kControllers) {
      const std::string log = processes_[c]->log();
      for (std::sregex_iterator it(log.begin(), log.end(), leading), end; it != end; ++it) {
        leaders[std::stoul((*it)[1].str())].push_back(c);
      }
    }
    std::cout << "  | term | led by |\n";
    for (const auto& [term, who] : leaders) {
      std::cout << "  | " << term << " | " << who.front() << (who.size() > 1 ? "  <-- MORE THAN ONE" : "") << " |\n";
      EXPECT_EQ(who.size(), 1u) << "term " << term;
    }
    EXPECT_GE(leaders.size(), 1u);
    return leaders.size();
  }

  /// Probes /healthz of every daemon that is up, every 250 ms, from a thread of its own, while
  /// attackers hijack probe connections and flood each daemon with idle heads. A probe that
  /// overlaps a disruption of its daemon is not counted.
  class Prober {
   public:
    Prober(ChaosTest& test, int train_port, int controller_port) : test_(test) {
      for (const auto& t : test.kTrainers) targets_.push_back({t, host_of(t), train_port});
      for (const auto& c : test.kControllers) targets_.push_back({c, host_of(c), controller_port});
      for (const auto& t : targets_) {
        hijackers_.push_back(std::make_unique<testing::Hijackers>(t.host, t.port, 4));
        idle_.push_back(std::make_unique<testing::IdleHeads>(t.host, t.port, 150));
      }
      thread_ = std::thread([this] { run(); });
    }
    ~Prober() { stop(); }
    void stop() {
      stop_ = true;
      if (thread_.joinable()) thread_.join();
      hijackers_.clear();
      idle_.clear();
    }
    int probes() const { return probes_.load(); }
    int answered() const { return answered_.load(); }

   private:
    struct Target {
      std::string name;
      std::string host;
      int port;
    };
    void run() {
      while (!stop_) {
        for (const auto& t : targets_) {
          if (test_.disrupted(t.name)) continue;
          const bool ok = testing::healthz_in_time(t.host, t.port);
          if (test_.disrupted(t.name)) continue;  // it went down meanwhile: not the front end's doing
          ++probes_;
          answered_ += ok ? 1 : 0;
        }
        std::this_thread::sleep_for(250ms);
      }
    }
    ChaosTest& test_;
    std::vector<Target> targets_;
    std::vector<std::unique_ptr<testing::Hijackers>> hijackers_;
    std::vector<std::unique_ptr<testing::IdleHeads>> idle_;
    std::atomic<bool> stop_{false};
    std::atomic<int> probes_{0};
    std::atomic<int> answered_{0};
    std::thread thread_;
  };

  std::string disk_size_;
  std::unique_ptr<testing::SmallDisk> disk_;
  std::filesystem::path key_file_;
  std::map<std::string, std::unique_ptr<ChildProcess>> processes_;
  std::mutex disrupted_mutex_;  ///< guards disrupted_
  std::set<std::string> disrupted_;
};

TEST_F(ChaosTest, EveryAcceptedJobSucceedsOnceAndEachTermHasOneLeader) {
  const int seconds = chaos_seconds();
  for (const auto& t : kTrainers) start(t);
  HostilePeer hostile("127.0.0.5", train_port_, HostilePeer::Mode::kLyingLength);
  ASSERT_TRUE(hostile.bound());
  for (const auto& c : kControllers) start(c);
  ASSERT_TRUE(eventually([&] { return read("/status").value("trainers", json::array()).size() >= 3; }, 20s))
      << read("/status").dump();

  Submitter submitter({host_of(kControllers[0]), host_of(kControllers[1])}, controller_port_);
  Prober prober(*this, train_port_, controller_port_);
  const std::map<std::string, int> done = run_chaos(seconds);
  submitter.stop();
  prober.stop();
  const std::vector<std::string> ids = submitter.accepted();

  // Every accepted job ends; none may be missing.
  const auto all_terminal = [&] {
    for (const auto& id : ids) {
      const std::string state = read("/jobs/" + id).value("state", "");
      if (state != "succeeded" && state != "failed" && state != "cancelled") return false;
    }
    return true;
  };
  EXPECT_TRUE(eventually(all_terminal, 240s)) << "jobs still not finished 240 s after the chaos";

  std::cout << "chaos: " << seconds << " s; 3 trainers, 2 controller replicas, each under a file limit of 512 with 4 "
            << "hijacked probe connections and 150 idle heads on it; a hostile host (lying Content-Length) on the "
            << "subnet, HOME_DIR on a " << disk_size_
            << " tmpfs\n  /healthz of the daemons that were up: " << prober.answered() << " of " << prober.probes()
            << " answered within 1 s\n  disruptions:";
  EXPECT_GE(prober.answered(), prober.probes() * 99 / 100) << "of " << prober.probes() << " probes";
  EXPECT_GT(prober.probes(), seconds);
  for (const auto& [what, n] : done) std::cout << " " << what << " " << n << ";";
  std::cout << "\n  submitted: " << ids.size() << " answered 202";
  for (const auto& [status, n] : submitter.refused()) {
    std::cout << ", " << n << (status == "unanswered" ? " " : " answered ") << status;
  }
  std::cout << "\n";
  const int once = count_succeeded_once(ids);
  EXPECT_EQ(once, static_cast<int>(ids.size())) << "jobs answered 202 that did not succeed exactly once";
  EXPECT_GT(ids.size(), 0u);
  const std::size_t terms = check_one_leader_per_term();
  struct statvfs fs {};
  if (::statvfs(disk_->path().c_str(), &fs) == 0) {
    std::cout << "  HOME_DIR holds " << (fs.f_blocks - fs.f_bfree) * fs.f_frsize / (1 << 20) << " MiB after the run\n";
  }
  std::cout << "  jobs answered 202: " << ids.size() << ", succeeded exactly once: " << once << "; terms: " << terms
            << "\n";
}

}  // namespace
}  // namespace mlswarm
