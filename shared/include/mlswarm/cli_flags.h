#pragma once

// Command-line flags both daemons share. Header-only, for the two main.cpp files (which link
// CLI11); the shared library itself does not depend on CLI11.

#include <string>

#include <CLI/CLI.hpp>

namespace mlswarm {

/// --log-level (LOG_LEVEL) and --log-format (LOG_FORMAT).
inline void add_logging_flags(CLI::App& app, std::string& level, std::string& format) {
  app.add_option("--log-level", level, "debug, info, warn or error (LOG_LEVEL)")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--log-format", format, "text, or json for one JSON object per line (LOG_FORMAT)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
}

}  // namespace mlswarm
