#pragma once

// Configuration from the command line and the environment, for the daemons' config parsers
// (the only translation units that include CLI11). Every setting is a flag and an
// environment variable validated by the same rules; the flag wins over the variable.

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace mlswarm::cli {

/// --flag and its environment variable `env` (may be null for flag-only settings), with
/// the default shown in --help.
template <typename T>
CLI::Option* setting(CLI::App& app, const std::string& flag, const char* env, T& value, const std::string& help) {
  CLI::Option* option = app.add_option(flag, value, env != nullptr ? help + " (" + env + ")" : help);
  if (env != nullptr) option->envname(env);
  return option->capture_default_str();
}

/// A boolean setting: the bare flag means true; the variable takes true/false, yes/no,
/// on/off or 1/0 (any case).
CLI::Option* switch_setting(CLI::App& app, const std::string& flag, const char* env, bool& value,
                            const std::string& help);

/// --log-level (LOG_LEVEL: debug, info, warn or error, any case) and --log-format
/// (LOG_FORMAT: text or json).
void logging_settings(CLI::App& app, std::string& level, std::string& format);

/// A check that a number lies in [lo, hi], with a message that says so.
CLI::Validator in_range(long long lo, long long hi);

/// What parsing decided: go on (nullopt), or exit with a code after writing `output`
/// (help or --version on stdout with 0; an error on stderr with 2, naming the flag and its
/// environment variable).
struct ParseExit {
  int code = 0;
  std::string output;
};
std::optional<ParseExit> parse(CLI::App& app, int argc, const char* const* argv);

/// Writes the output (stdout for code 0, stderr otherwise) and returns the code.
int finish(const ParseExit& exit);

/// The same exit for a check made after parsing (a token file, a subnet): an error with
/// code 2. The message must name the variable (Error messages of those checks do).
ParseExit config_error(const std::string& program, const std::string& message);

}  // namespace mlswarm::cli
