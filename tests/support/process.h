#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace mlswarm::testing {

/// A test writing to a daemon that refuses a body and closes the connection before reading it
/// (a 413) gets EPIPE from its write, not SIGPIPE, which killed the whole test process once
/// (cpp-httplib's client does not send with MSG_NOSIGNAL).
inline const bool kSigpipeIgnored = [] {
  ::signal(SIGPIPE, SIG_IGN);
  return true;
}();

/// A daemon under test: started with fork/exec, its output going to a log file, killed
/// (SIGKILL) if still running when this object goes away.
class ChildProcess {
 public:
  ChildProcess(const std::string& binary, const std::vector<std::string>& args, const std::filesystem::path& log_path,
               const std::vector<std::string>& env = {})
      : log_path_(log_path) {
    std::vector<std::string> argv_storage = {binary};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      for (const auto& kv : env) ::putenv(const_cast<char*>(kv.c_str()));
      std::vector<char*> argv;
      for (auto& a : argv_storage) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~ChildProcess() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      wait_exit(std::chrono::seconds(10));
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) { ::kill(pid_, sig); }
  bool running() { return pid_ > 0 && !status_ && !poll_exit(); }

  /// Waits for the process to exit; returns its wait status, or nullopt at the deadline.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
      if (poll_exit()) break;
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }

  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  bool poll_exit() {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = status;
      return true;
    }
    return false;
  }

  pid_t pid_ = -1;
  std::optional<int> status_;
  std::filesystem::path log_path_;
};

/// Peak resident memory of a process (VmHWM), in KiB.
inline long peak_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

/// The first of `count` consecutive TCP ports that nothing listens on, on any address, right now
/// (a controller's rendezvous ports: a test's own, not the default range every test shares).
/// Drawn below the kernel's ephemeral range (32768 and up), where the connections of tests running
/// beside this one leave TIME_WAIT sockets on every port: a probe there that bound without
/// SO_REUSEADDR found no 8 free in a row in 200 tries on a busy CI machine. Probed as a server
/// binds them (SO_REUSEADDR: TIME_WAIT does not count, a listener does).
inline int free_port_range(int count) {
  std::random_device seed;
  std::mt19937 rng(seed());
  std::uniform_int_distribution<int> pick(20000, 32000 - count);
  for (int attempt = 0; attempt < 500; ++attempt) {
    const int base = pick(rng);
    bool all_free = true;
    for (int p = base; all_free && p < base + count; ++p) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      const int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in any{};
      any.sin_family = AF_INET;
      any.sin_port = htons(static_cast<std::uint16_t>(p));
      all_free = ::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0;
      ::close(fd);
    }
    if (all_free) return base;
  }
  return 0;
}

/// A TCP port on `host` that nothing listens on right now.
inline int free_port(const std::string& host = "127.0.0.1") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

}  // namespace mlswarm::testing
