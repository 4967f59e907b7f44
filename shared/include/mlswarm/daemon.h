#pragma once

#include "mlswarm/http_server.h"

namespace mlswarm {

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts afterwards,
/// and ignores SIGPIPE. Call first thing in main, before any thread exists.
void block_stop_signals();

/// Serves until SIGTERM or SIGINT arrives (or the server fails), then stops the server and
/// returns. A dedicated thread waits for the signal and is joined before returning.
void serve_until_stop_signal(HttpServer& server);

}  // namespace mlswarm
