#include "mlswarm/cli.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include <fmt/format.h>

namespace mlswarm::cli {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// CLI11 names the flag in its messages ("--port: ..."); add the variable that may have set it.
std::string name_the_variable(const CLI::App& app, std::string message) {
  for (const CLI::Option* option : app.get_options()) {
    const std::string env = option->get_envname();
    if (env.empty()) continue;
    for (const std::string& name : option->get_lnames()) {
      const std::string flag = "--" + name;
      const auto at = message.find(flag);
      if (at == std::string::npos) continue;
      const auto end = at + flag.size();
      // Whole flag only: --port must not match inside --port-range.
      if (end < message.size() && (std::isalnum(static_cast<unsigned char>(message[end])) || message[end] == '-')) {
        continue;
      }
      return message.insert(end, " / " + env);
    }
  }
  return message;
}

}  // namespace

CLI::Option* switch_setting(CLI::App& app, const std::string& flag, const char* env, bool& value,
                            const std::string& help) {
  CLI::Option* option = app.add_flag(flag, value, env != nullptr ? help + " (" + env + "=1)" : help);
  if (env != nullptr) option->envname(env);
  return option;
}

void logging_settings(CLI::App& app, std::string& level, std::string& format) {
  setting(app, "--log-level", "LOG_LEVEL", level, "debug, info, warn or error")->transform([](std::string value) {
    value = lower(std::move(value));
    if (value == "warning") value = "warn";
    if (value != "debug" && value != "info" && value != "warn" && value != "error") {
      throw CLI::ValidationError(fmt::format("'{}' is not a log level; use debug, info, warn or error", value));
    }
    return value;
  });
  setting(app, "--log-format", "LOG_FORMAT", format, "text, or json for one JSON object per line")
      ->transform([](std::string value) {
        value = lower(std::move(value));
        if (value != "text" && value != "json") {
          throw CLI::ValidationError(fmt::format("'{}' is not a log format; use text or json", value));
        }
        return value;
      });
}

CLI::Validator in_range(long long lo, long long hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        long long value = 0;
        std::size_t used = 0;
        try {
          value = std::stoll(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return fmt::format("'{}' is not an integer", text);
        if (value < lo || value > hi) return fmt::format("{} is not in {}..{}", text, lo, hi);
        return {};
      },
      fmt::format("INT in {}..{}", lo, hi));
}

std::optional<ParseExit> parse(CLI::App& app, int argc, const char* const* argv) {
  // Help first, whatever the environment holds (CLI11 validates variables before it looks
  // at --help, so a bad one would hide the help that explains it).
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "-h" || arg == "--help") return ParseExit{0, app.help()};
  }
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp&) {
    return ParseExit{0, app.help()};
  } catch (const CLI::CallForAllHelp&) {
    return ParseExit{0, app.help("", CLI::AppFormatMode::All)};
  } catch (const CLI::CallForVersion& e) {
    return ParseExit{0, std::string(e.what()) + "\n"};
  } catch (const CLI::ParseError& e) {
    return ParseExit{2, fmt::format("{}: {}\nRun with --help for every setting.\n", app.get_name(),
                                    name_the_variable(app, e.what()))};
  }
}

int finish(const ParseExit& exit) {
  std::fputs(exit.output.c_str(), exit.code == 0 ? stdout : stderr);
  return exit.code;
}

ParseExit config_error(const std::string& program, const std::string& message) {
  return ParseExit{2, fmt::format("{}: {}\n", program, message)};
}

}  // namespace mlswarm::cli
