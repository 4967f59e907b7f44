#include "deploy_commands.h"

#include <iostream>
#include <thread>

#include <fmt/format.h>

namespace mlswarm::cli_tool {

using nlohmann::json;

namespace {

std::string model_text(const json& m) { return fmt::format("{} v{}", text(m, "model_id"), text(m, "version")); }

std::string gates_text(const json& gates) {
  std::string out;
  for (const auto& g : gates) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} {:.4g} {} {:.4g}{}", text(g, "gate"), number(g, "figure").value_or(0),
                       g.value("at_most", true) ? "<=" : ">=", number(g, "limit").value_or(0),
                       g.value("passed", true) ? "" : " FAILED");
  }
  return out;
}

}  // namespace

json model_and_version(const std::string& spec) {
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos) return {{"model_id", spec}};
  const std::string version = spec.substr(colon + 1);
  if (version.empty() || version.find_first_not_of("0123456789") != std::string::npos || version.size() > 8) {
    throw CliError("give MODEL or MODEL:VERSION (a number), not " + spec, 2);
  }
  return {{"model_id", spec.substr(0, colon)}, {"version", std::stoi(version)}};
}

std::string rollout_line(const json& d) {
  const json& r = d.value("rollout", json());
  if (!r.is_object()) return fmt::format("{}: serves {}", text(d, "name"), model_text(d.value("stable", json())));
  const json& spec = r.value("spec", json::object());
  std::string line = fmt::format("{}: {} weight {}% ({} over {})", text(d, "name"), text(r, "state"), text(r, "weight"),
                                 model_text(spec), model_text(r.value("stable", json())));
  const json gates = r.contains("phase_gates") ? r["phase_gates"] : r.value("gates", json::array());
  if (!gates.empty()) line += ": " + gates_text(gates);
  if (!text(r, "reason").empty() && text(r, "reason") != "-") line += "; " + text(r, "reason");
  return line;
}

int cmd_deploy(const Client& client, const Output& out, const std::string& name, const std::string& model) {
  Reply reply = client.put_json("/deployments/" + name, model_and_version(model));
  if (out.json) return print_json(reply), 0;
  std::cout << fmt::format("{} serves {}\n", name, model_text(reply.body.value("stable", json())));
  return 0;
}

int cmd_rollout(const Client& client, const Output& out, const std::string& name, const std::string& model,
                const json& options, bool follow, std::chrono::milliseconds poll) {
  json body = options.is_object() ? options : json::object();
  body.update(model_and_version(model));
  Reply reply = client.post_json("/deployments/" + name + "/rollout", body);
  if (out.json) {
    print_json(reply);
  } else {
    std::cout << fmt::format("rollout of {} onto {} started: evaluating\n",
                             model_text(reply.body["rollout"].value("spec", json::object())), name);
  }
  return follow ? follow_rollout(client, out, name, poll) : 0;
}

int cmd_rollout_abort(const Client& client, const Output& out, const std::string& name) {
  Reply reply = client.del("/deployments/" + name + "/rollout");
  if (out.json) return print_json(reply), 0;
  std::cout << rollout_line(reply.body) << "\n";
  return 0;
}

int cmd_deployments(const Client& client, const Output& out) {
  Reply reply = client.get("/deployments");
  if (out.json) return print_json(reply), 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : reply.body.value("deployments", json::array())) {
    const json& r = d.value("rollout", json());
    const std::string state = r.is_object() ? text(r, "state") : "-";
    const bool live = state == "evaluating" || state == "shadow" || state == "canary";
    rows.push_back({text(d, "name"), model_text(d.value("stable", json())),
                    r.is_object() ? model_text(r.value("spec", json::object())) : "-", state,
                    live ? text(r, "weight") + "%" : "-"});
  }
  std::cout << format_table({"NAME", "SERVES", "CANDIDATE", "ROLLOUT", "WEIGHT"}, rows);
  return 0;
}

int follow_rollout(const Client& client, const Output& out, const std::string& name, std::chrono::milliseconds poll) {
  std::string last;
  for (;;) {
    Reply reply = client.get("/deployments/" + name);
    const json& r = reply.body.value("rollout", json());
    const std::string state = r.is_object() ? text(r, "state") : "none";
    const bool done = state != "evaluating" && state != "shadow" && state != "canary";
    const std::string line = out.json ? reply.body.dump() : rollout_line(reply.body);
    if (out.terminal && !out.json) {
      // One live line, redrawn in place (cleared to its end), as a job's --follow does.
      std::cout << "\r" << line.substr(0, static_cast<std::size_t>(std::max(20, out.width - 1))) << "\x1b[K"
                << (done ? "\n" : "") << std::flush;
    } else if (line != last) {
      std::cout << line << std::endl;  // a pipe: one line per change
    }
    last = line;
    if (done) return state == "promoted" ? 0 : 1;
    std::this_thread::sleep_for(poll);  // the pace of the display, not a wait for an event
  }
}

}  // namespace mlswarm::cli_tool
