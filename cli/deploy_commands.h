#pragma once

// mlswarm deploy, mlswarm rollout and mlswarm deployments: served names and their rollouts.

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "client.h"
#include "commands.h"

namespace mlswarm::cli_tool {

/// "MODEL" or "MODEL:VERSION" as {"model_id", "version"?}; CliError (2) otherwise.
nlohmann::json model_and_version(const std::string& text);

/// PUT /deployments/NAME: the name serves MODEL[:VERSION].
int cmd_deploy(const Client& client, const Output& out, const std::string& name, const std::string& model);
/// POST /deployments/NAME/rollout of MODEL[:VERSION] with `options` (a JSON object of rollout
/// fields, may be empty); with `follow`, as follow_rollout.
int cmd_rollout(const Client& client, const Output& out, const std::string& name, const std::string& model,
                const nlohmann::json& options, bool follow, std::chrono::milliseconds poll);
/// DELETE /deployments/NAME/rollout.
int cmd_rollout_abort(const Client& client, const Output& out, const std::string& name);
/// GET /deployments as a table.
int cmd_deployments(const Client& client, const Output& out);
/// One live line per change until the rollout ends: exit 0 promoted, 1 rolled back or aborted
/// (with the reason).
int follow_rollout(const Client& client, const Output& out, const std::string& name, std::chrono::milliseconds poll);
/// "fmnist: canary 25% (fmnist-b v7 over fmnist-a v4): error_rate 0 <= 0.01, ...".
std::string rollout_line(const nlohmann::json& deployment);

}  // namespace mlswarm::cli_tool
