#include "mlswarm/daemon.h"

#include <pthread.h>

#include <csignal>
#include <thread>

#include <spdlog/spdlog.h>

namespace mlswarm {
namespace {

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void block_stop_signals() {
  sigset_t set = stop_signal_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

void serve_until_stop_signal(HttpServer& server) {
  std::thread waiter([&server] {
    sigset_t set = stop_signal_set();
    int signal = 0;
    sigwait(&set, &signal);
    spdlog::info("{} received: stopping", signal == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
  });
  server.run();
  // run() may also return because the server failed: wake the waiter so it can be joined.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
}

}  // namespace mlswarm
