#include "mlswarm/daemon.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <thread>

#include <spdlog/spdlog.h>

namespace mlswarm {
namespace {

int g_signal_pipe[2] = {-1, -1};

extern "C" void note_stop_signal(int signal) {
  const int saved = errno;
  const char byte = static_cast<char>(signal);
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &byte, 1);  // async-signal-safe
  errno = saved;
}

}  // namespace

void catch_stop_signals() {
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) return;
  struct sigaction action {};
  action.sa_handler = note_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // A file size limit (ulimit -f) makes writes fail with EFBIG, which the journal handles;
  // the default action would kill the daemon instead.
  std::signal(SIGXFSZ, SIG_IGN);
}

void serve_until_stop_signal(HttpServer& server, const std::function<void()>& before_stop) {
  std::thread waiter([&server, &before_stop] {
    char byte = 0;
    ssize_t n = -1;
    do {
      n = ::read(g_signal_pipe[0], &byte, 1);
    } while (n < 0 && errno == EINTR);
    if (byte == SIGTERM || byte == SIGINT) {
      spdlog::info("{} received: stopping", byte == SIGTERM ? "SIGTERM" : "SIGINT");
      if (before_stop) before_stop();
    }
    server.stop();
  });
  server.run();
  // run() may also return because the server failed: wake the waiter so it can be joined.
  const char wake = 0;
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &wake, 1);
  waiter.join();
}

}  // namespace mlswarm
