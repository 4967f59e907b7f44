#include "sweep_commands.h"

#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace mlswarm::cli_tool {

using nlohmann::json;

namespace {

json read_spec(const std::string& path) {
  std::string body;
  if (path == "-") {
    body.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::ifstream in(path);
    if (!in) throw CliError("cannot read " + path, 2);
    body.assign(std::istreambuf_iterator<char>(in), {});
  }
  json spec = json::parse(body, nullptr, false);
  if (spec.is_discarded()) throw CliError(path + " is not JSON", 2);
  return spec;
}

/// "lr=0.0123 label_smoothing=0.1": a trial's parameters, short.
std::string params_text(const json& params) {
  std::string out;
  for (const auto& [name, value] : params.items()) {
    if (!out.empty()) out += ' ';
    out += name + "=" +
           (value.is_number_float() ? fmt::format("{:.4g}", value.get<double>()) : text(params, name.c_str()));
  }
  return out;
}

std::string leaderboard(const json& sweep) {
  std::vector<std::vector<std::string>> rows;
  std::vector<int> order;
  for (const auto& t : sweep.value("leaderboard", json::array())) order.push_back(t.get<int>());
  // The leaderboard first, then the trials that finished no rung yet.
  for (const auto& t : sweep.value("trials", json::array())) {
    if (std::find(order.begin(), order.end(), t.value("trial", -1)) == order.end())
      order.push_back(t.value("trial", -1));
  }
  for (int id : order) {
    for (const auto& t : sweep.value("trials", json::array())) {
      if (t.value("trial", -1) != id) continue;
      rows.push_back({text(t, "trial"), text(t, "state"), text(t, "rung"), text(t, "epochs"),
                      fixed(number(t, "accuracy"), 4), params_text(t.value("params", json::object()))});
    }
  }
  return format_table({"TRIAL", "STATE", "RUNG", "EPOCHS", "ACCURACY", "PARAMS"}, rows);
}

std::string best_text(const json& sweep) {
  const json& best = sweep.value("best", json());
  if (!best.is_object()) return "no trial finished a rung";
  return fmt::format("best: trial {} {} accuracy {} after {} epochs{}", text(best, "trial"),
                     params_text(best.value("params", json::object())), fixed(number(best, "accuracy"), 4),
                     text(best, "epochs"),
                     best.contains("published_as") ? "; served as model " + text(best, "published_as") : "");
}

}  // namespace

std::string sweep_line(const json& s) {
  int running = 0;
  int top = 0;
  const json trials = s.value("trials", json::array());
  for (const auto& t : trials) {
    running += t.value("state", "") == "running" ? 1 : 0;
    top = std::max(top, t.value("rung", 0));
  }
  int reached = 0;
  for (const auto& t : trials) reached += t.value("rung", 0) == top ? 1 : 0;
  std::string best = "no result yet";
  if (!s.value("leaderboard", json::array()).empty()) {
    const int id = s["leaderboard"][0].get<int>();
    for (const auto& t : trials) {
      if (t.value("trial", -1) == id) {
        best = fmt::format("best trial {} {} ({} epochs)", id, fixed(number(t, "accuracy"), 4), text(t, "epochs"));
      }
    }
  }
  const int spec_trials = s.contains("spec") ? s["spec"].value("trials", 0) : 0;
  return fmt::format("{} {}: {}/{} trials, {} running, rung {} reached by {}; {}; {:.0f} trainer-s",
                     text(s, "sweep_id"), text(s, "state"), trials.size(), spec_trials, running, top, reached, best,
                     number(s, "trainer_seconds").value_or(0));
}

int cmd_sweep_create(const Client& client, const Output& out, const std::string& spec_file, bool follow,
                     std::chrono::milliseconds poll) {
  Reply reply = client.post_json("/sweeps", read_spec(spec_file));
  const std::string id = text(reply.body, "sweep_id");
  if (out.json) {
    print_json(reply);
  } else {
    std::cout << fmt::format("sweep {} accepted: {} trials, rungs of {} epochs\n", id,
                             text(reply.body["spec"], "trials"), text(reply.body, "rungs"));
  }
  return follow ? follow_sweep(client, out, id, poll) : 0;
}

int cmd_sweep_show(const Client& client, const Output& out, const std::string& sweep_id, bool follow,
                   std::chrono::milliseconds poll) {
  if (follow) return follow_sweep(client, out, sweep_id, poll);
  Reply reply = client.get("/sweeps/" + sweep_id);
  if (out.json) return print_json(reply), 0;
  std::cout << sweep_line(reply.body) << "\n" << leaderboard(reply.body);
  return 0;
}

int cmd_sweep_cancel(const Client& client, const Output& out, const std::string& sweep_id) {
  Reply reply = client.del("/sweeps/" + sweep_id);
  if (out.json) return print_json(reply), 0;
  std::cout << fmt::format("sweep {}: {}\n", sweep_id, text(reply.body, "state"));
  return 0;
}

int cmd_sweeps(const Client& client, const Output& out) {
  Reply reply = client.get("/sweeps");
  if (out.json) return print_json(reply), 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : reply.body.value("sweeps", json::array())) {
    const json& spec = s.value("spec", json::object());
    const json& best = s.value("best", json());
    rows.push_back({text(s, "sweep_id"), text(s, "state"), text(spec.value("scheduler", json::object()), "type"),
                    text(spec, "trials"), best.is_object() ? text(best, "trial") : "-",
                    best.is_object() ? fixed(number(best, "accuracy"), 4) : "-",
                    fmt::format("{:.0f}", number(s, "trainer_seconds").value_or(0))});
  }
  std::cout << format_table({"SWEEP", "STATE", "SCHEDULER", "TRIALS", "BEST", "ACCURACY", "TRAINER-S"}, rows);
  return 0;
}

int follow_sweep(const Client& client, const Output& out, const std::string& sweep_id, std::chrono::milliseconds poll) {
  std::string last;
  for (;;) {
    Reply reply = client.get("/sweeps/" + sweep_id);
    const std::string state = text(reply.body, "state");
    const bool done = state != "running";
    if (out.json) {
      if (reply.text != last) std::cout << reply.body.dump() << std::endl;
      last = reply.text;
    } else {
      const std::string line = sweep_line(reply.body);
      if (out.terminal) {
        std::cout << "\r" << line.substr(0, static_cast<std::size_t>(std::max(20, out.width - 1))) << "\x1b[K"
                  << (done ? "\n" : "") << std::flush;
      } else if (line != last) {
        std::cout << line << std::endl;
      }
      last = line;
    }
    if (done) {
      if (!out.json) std::cout << leaderboard(reply.body) << best_text(reply.body) << "\n";
      return state == "succeeded" ? 0 : kExitFailed;
    }
    std::this_thread::sleep_for(poll);
  }
}

}  // namespace mlswarm::cli_tool
