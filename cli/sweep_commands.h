#pragma once

// mlswarm sweep create|show|cancel and mlswarm sweeps.

#include <chrono>
#include <string>

#include "client.h"
#include "commands.h"

namespace mlswarm::cli_tool {

/// POST /sweeps with the JSON in `spec_file` ("-": standard input); with `follow`, as follow_sweep.
int cmd_sweep_create(const Client& client, const Output& out, const std::string& spec_file, bool follow,
                     std::chrono::milliseconds poll);
/// The sweep's trials as a leaderboard table; with `follow`, as follow_sweep.
int cmd_sweep_show(const Client& client, const Output& out, const std::string& sweep_id, bool follow,
                   std::chrono::milliseconds poll);
int cmd_sweep_cancel(const Client& client, const Output& out, const std::string& sweep_id);
/// GET /sweeps as a table.
int cmd_sweeps(const Client& client, const Output& out);
/// A live leaderboard line until the sweep ends, then its table: exit 0 with the best trial
/// when it succeeded, 1 when it failed or was cancelled.
int follow_sweep(const Client& client, const Output& out, const std::string& sweep_id, std::chrono::milliseconds poll);

/// "asha9 running: 9/9 trials, 2 running, rung 2 reached by 1; best trial 7 0.8123 (9 epochs); 41 trainer-s".
std::string sweep_line(const nlohmann::json& sweep);

}  // namespace mlswarm::cli_tool
