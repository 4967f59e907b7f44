#pragma once

#include <string_view>

namespace mlswarm {

/// Sets up the process-wide spdlog logger on stderr, one line per event, UTC timestamps.
/// `level` is "debug", "info", "warn" or "error". Call once from main before starting threads.
void init_logging(std::string_view level);

}  // namespace mlswarm
