// `mlswarm load`, the closed-loop load generator of the benchmarks and of the e2e tests'
// zero-downtime checks, against a real HTTP server in this process (plain and TLS): what it
// sends, how it counts, and how it follows a replica that drains or is gone.

#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../support/temp_dir.h"
#include "mlswarm/http_server.h"

namespace mlswarm {
namespace {

using json = nlohmann::json;

struct LoadRun {
  int code = -1;
  json out;         ///< the JSON line
  std::string err;  ///< stderr
};

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// A server that answers every POST with `status`, asking the client to close the connection
/// after every `close_every`-th answer (a replica draining), and remembers what came.
class Server {
 public:
  Server(int status, int close_every, bool tls = false, const std::filesystem::path& dir = {}) {
    HttpService service;
    service.handle = [this, status, close_every](const HttpRequest& request) {
      const long n = ++requests_;
      {
        std::lock_guard lock(mutex_);
        bodies_ok_ = bodies_ok_ && request.body == kBody;
        keys_.insert(request.header("x-request-key"));
        extra_ok_ =
            extra_ok_ && request.header("x-extra") == "yes" && request.header("authorization") == "Bearer load-token";
      }
      HttpReply reply = HttpReply::json(status, json{{"n", n}});
      if (close_every > 0 && n % close_every == 0) reply.headers["Connection"] = "close";
      return reply;
    };
    service.label = [](const std::string&) { return std::string("load"); };
    HttpServerOptions options;
    options.threads = 4;
    if (tls) {
      options.tls_cert_file = (dir / "tls.crt").string();
      options.tls_key_file = (dir / "tls.key").string();
      const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout " +
                                  options.tls_key_file + " -out " + options.tls_cert_file + " 2>/dev/null";
      EXPECT_EQ(std::system(command.c_str()), 0);
    }
    server_ = std::make_unique<HttpServer>(service, options);
    server_->bind("127.0.0.1", 0);
    thread_ = std::thread([this] { server_->run(); });
  }
  ~Server() {
    server_->stop();
    thread_.join();
  }
  int port() const { return server_->port(); }
  long requests() const { return requests_.load(); }
  std::set<std::string> keys() {
    std::lock_guard lock(mutex_);
    return keys_;
  }
  bool bodies_ok() {
    std::lock_guard lock(mutex_);
    return bodies_ok_;
  }
  bool extra_ok() {
    std::lock_guard lock(mutex_);
    return extra_ok_;
  }

  static constexpr const char* kBody = R"({"model_id": "m", "examples": [[0.5, 0.25]]})";

 private:
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::atomic<long> requests_{0};
  std::mutex mutex_;
  std::set<std::string> keys_;
  bool bodies_ok_ = true;
  bool extra_ok_ = true;
};

class LoadTest : public ::testing::Test {
 protected:
  /// `mlswarm load` against `url` with these extra arguments, the body and token from files.
  LoadRun load(const std::string& url, const std::vector<std::string>& args) {
    const auto body = dir_.path() / "body.json";
    std::ofstream(body) << Server::kBody;
    const auto token = dir_.path() / "token";
    std::ofstream(token) << "load-token";
    const auto err = dir_.path() / "err.txt";
    std::string command = std::string(MLSWARM_CLI_BIN) + " --url " + url + " --token-file " + token.string() +
                          " load --body-file " + body.string() + " --warmup 0.1 --seconds 0.8";
    for (const auto& a : args) command += " '" + a + "'";
    command += " 2>" + err.string();
    LoadRun run;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return run;
    std::string out;
    char buffer[4096];
    std::size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
    const int status = ::pclose(pipe);
    run.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.err = slurp(err);
    run.out = json::parse(out, nullptr, false);
    return run;
  }
  testing::TempDir dir_;
};

TEST_F(LoadTest, SendsTheBodyAndHeadersOfEachClientAndCountsTheAnswers) {
  Server server(200, 0);
  const LoadRun run =
      load("http://127.0.0.1:" + std::to_string(server.port()),
           {"--clients", "5", "--threads", "2", "--key-header", "X-Request-Key", "--header", "X-Extra: yes"});
  ASSERT_EQ(run.code, 0) << run.err;
  ASSERT_TRUE(run.out.is_object()) << run.err;
  EXPECT_EQ(run.out["failed"], 0);
  EXPECT_GT(run.out["requests"].get<long>(), 0);
  EXPECT_LE(run.out["requests"].get<long>(), run.out["sent"].get<long>()) << "only the measured seconds are timed";
  EXPECT_EQ(run.out["sent"].get<long>(), server.requests()) << "each request once: nothing sent twice";
  EXPECT_EQ(run.out["answered_by"]["127.0.0.1"], run.out["sent"]);
  EXPECT_TRUE(server.bodies_ok()) << "every body as in the file";
  EXPECT_TRUE(server.extra_ok()) << "--header and the token on every request";
  EXPECT_EQ(server.keys(), (std::set<std::string>{"client-0", "client-1", "client-2", "client-3", "client-4"}))
      << "--key-header: a value per client";
}

// A replica that drains answers "Connection: close": the client reconnects, and no request fails.
TEST_F(LoadTest, FollowsAServerThatClosesAfterAnAnswer) {
  Server server(200, 7);
  const LoadRun run = load("http://127.0.0.1:" + std::to_string(server.port()), {"--clients", "3"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.out["failed"], 0) << run.err;
  EXPECT_GT(run.out["sent"].get<long>(), 14) << "past the first closes";
  EXPECT_EQ(run.out["sent"].get<long>(), server.requests());
}

TEST_F(LoadTest, AnotherStatusIsAFailureUnlessExpected) {
  Server server(503, 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port());
  const LoadRun refused = load(url, {"--clients", "2"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_EQ(refused.out["failed"], refused.out["sent"]);
  EXPECT_EQ(refused.out["requests"], 0);
  EXPECT_NE(refused.err.find("request failed: 503"), std::string::npos) << refused.err;
  const LoadRun expected = load(url, {"--clients", "2", "--expect-status", "503"});
  EXPECT_EQ(expected.code, 0) << expected.err;
  EXPECT_GT(expected.out["requests"].get<long>(), 0);
}

TEST_F(LoadTest, NothingListeningIsAFailureThatNamesTheAddress) {
  int port = 0;
  {
    Server gone(200, 0);  // a port that was free a moment ago, closed again
    port = gone.port();
  }
  const LoadRun run = load("http://127.0.0.1:" + std::to_string(port), {"--clients", "1"});
  EXPECT_EQ(run.code, 1);
  EXPECT_GT(run.out["failed"].get<long>(), 0);
  EXPECT_EQ(run.out["requests"], 0);
  EXPECT_NE(run.err.find("request failed: 127.0.0.1 "), std::string::npos) << run.err;
}

TEST_F(LoadTest, OverTls) {
  Server server(200, 5, true, dir_.path());
  const LoadRun run = load("https://127.0.0.1:" + std::to_string(server.port()), {"--clients", "2"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.out["failed"], 0);
  EXPECT_GT(run.out["requests"].get<long>(), 0);
  EXPECT_EQ(run.out["sent"].get<long>(), server.requests());
}

}  // namespace
}  // namespace mlswarm
