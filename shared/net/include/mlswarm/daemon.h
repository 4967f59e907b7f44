#pragma once

#include <functional>

#include "mlswarm/http_server.h"

namespace mlswarm {

/// Installs handlers for SIGTERM and SIGINT that only note the signal (into a self-pipe),
/// and ignores SIGPIPE. Call first thing in main. A handler, not a blocked mask, because
/// libraries start threads before main (LibTorch does) whose masks we do not control: a
/// process-directed signal may land on any of them.
void catch_stop_signals();

/// Serves until SIGTERM or SIGINT arrives (or the server fails), then stops the server and
/// returns. A dedicated thread waits for the signal and is joined before returning. On a
/// signal it runs `before_stop` (if any) first, while the server still answers: a trainer
/// stops its jobs there and waits until the controller has read that they stopped.
void serve_until_stop_signal(HttpServer& server, const std::function<void()>& before_stop = {});

}  // namespace mlswarm
