#include "commands.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "mlswarm/job.h"

namespace mlswarm::cli_tool {

using nlohmann::json;

std::optional<double> number(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return std::nullopt;
  return j[key].get<double>();
}

std::string text(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "-";
  const json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  return v.dump();
}

std::string fixed(const std::optional<double>& v, int digits) { return v ? fmt::format("{:.{}f}", *v, digits) : "-"; }

void print_json(const Reply& reply) { std::cout << reply.body.dump() << std::endl; }

namespace {

/// 1523.4 -> "1,523".
std::string grouped(double v) {
  auto n = static_cast<long long>(std::llround(v));
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

std::string ago(const json& j, const char* key) {
  auto t = number(j, key);
  if (!t || *t <= 0) return "-";
  return format_duration(std::max(0.0, static_cast<double>(std::time(nullptr)) - *t)) + " ago";
}

std::vector<std::string> job_row(const json& j) {
  auto progress = number(j, "progress");
  std::string epoch =
      number(j, "epoch").value_or(0) > 0 ? fmt::format("{}/{}", text(j, "epoch"), text(j, "epochs")) : "-";
  return {text(j, "job_id"),
          text(j, "model_id"),
          text(j, "state"),
          epoch,
          progress ? fmt::format("{:.0f}%", *progress * 100) : "-",
          fixed(number(j, "loss"), 4),
          fixed(number(j, "accuracy"), 4),
          number(j, "images_per_s").value_or(0) > 0 ? grouped(*number(j, "images_per_s")) : "-",
          text(j, "state") == "running" ? format_duration(j.value("eta_s", json())) : "-",
          j.contains("world_size") && j["world_size"].is_number() && j["world_size"].get<int>() > 1
              ? fmt::format("{} trainers", j["world_size"].get<int>())
              : text(j, "trainer")};
}

std::string jobs_table(const json& jobs) {
  std::vector<json> sorted(jobs.begin(), jobs.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const json& a, const json& b) {
    return number(a, "created_at").value_or(0) < number(b, "created_at").value_or(0);
  });
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : sorted) rows.push_back(job_row(j));
  return format_table({"JOB", "MODEL", "STATE", "EPOCH", "PROGRESS", "LOSS", "ACCURACY", "IMAGES/S", "ETA", "TRAINER"},
                      rows);
}

std::string default_model_id(const std::string& dataset) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%m%d-%H%M%S", &tm);
  std::string base;
  for (char c : dataset) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0) base += c;
  }
  return (base.empty() ? "model" : base.substr(0, 16)) + "-" + stamp;
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CliError("cannot read " + path, kExitFailed);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

std::string format_duration(const json& seconds) {
  if (!seconds.is_number()) return "-";
  auto s = static_cast<long>(std::lround(std::max(0.0, seconds.get<double>())));
  if (s < 60) return fmt::format("{} s", s);
  if (s < 3600) return fmt::format("{} min {} s", s / 60, s % 60);
  return fmt::format("{} h {} min", s / 3600, (s % 3600) / 60);
}

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t c = 0; c < header.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      out += c + 1 < header.size() ? fmt::format("{:<{}}  ", cell, width[c]) : cell;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  if (rows.empty()) out += "(none)\n";
  return out;
}

std::string progress_line(const json& job, int bar_width) {
  const std::string state = text(job, "state");
  const double fraction = std::clamp(number(job, "progress").value_or(0), 0.0, 1.0);
  std::string out;
  if (number(job, "epoch").value_or(0) > 0) out += fmt::format("epoch {}/{} ", text(job, "epoch"), text(job, "epochs"));
  if (bar_width > 0) {
    auto filled = static_cast<int>(std::lround(fraction * bar_width));
    out += "[" + std::string(static_cast<std::size_t>(filled), '#') +
           std::string(static_cast<std::size_t>(bar_width - filled), '.') + "] ";
  }
  out += fmt::format("{:3.0f}%", fraction * 100);
  if (auto steps = number(job, "steps_per_epoch"); steps && *steps > 0) {
    out += fmt::format(" step {}/{}", text(job, "step"), text(job, "steps_per_epoch"));
  }
  if (auto loss = number(job, "loss")) out += fmt::format(" loss {:.4f}", *loss);
  if (auto ips = number(job, "images_per_s"); ips && *ips > 0) out += " " + grouped(*ips) + " images/s";
  if (state == "running") out += " ETA " + format_duration(job.value("eta_s", json()));
  if (state != "running") out += " " + state;
  return out;
}

int cmd_status(const Client& client, const Output& out) {
  Reply reply = client.get("/status");
  if (out.json) return print_json(reply), 0;
  const json& s = reply.body;
  if (s.contains("controller") && s["controller"].is_object()) {
    const json& c = s["controller"];
    std::cout << fmt::format("controller {} ({}, term {})\n\n", client.url(), text(c, "role"), text(c, "term"));
  }
  std::vector<std::vector<std::string>> trainers;
  for (const auto& t : s.value("trainers", json::array())) {
    trainers.push_back({text(t, "address"), text(t, "state"), text(t, "capacity"), text(t, "running"),
                        text(t, "queued"), ago(t, "last_seen")});
  }
  std::cout << fmt::format("TRAINERS ({})\n", trainers.size())
            << format_table({"ADDRESS", "STATE", "CAPACITY", "RUNNING", "QUEUED", "LAST SEEN"}, trainers) << "\n";
  const json jobs = s.value("jobs", json::array());
  std::cout << fmt::format("JOBS ({})\n", jobs.size()) << jobs_table(jobs);
  return 0;
}

int cmd_jobs(const Client& client, const Output& out, const std::string& state) {
  Reply reply = client.get("/jobs");
  json jobs = json::array();
  for (const auto& j : reply.body.value("jobs", json::array())) {
    if (state.empty() || text(j, "state") == state) jobs.push_back(j);
  }
  if (out.json) {
    std::cout << json{{"jobs", jobs}}.dump() << std::endl;
    return 0;
  }
  std::cout << jobs_table(jobs);
  return 0;
}

int cmd_models(const Client& client, const Output& out) {
  Reply reply = client.get("/models");
  if (out.json) return print_json(reply), 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : reply.body.value("models", json::array())) {
    rows.push_back({text(m, "model_id"), text(m, "model_type"), text(m, "dataset"), text(m, "version"),
                    fixed(number(m, "accuracy"), 4), ago(m, "updated_at")});
  }
  std::cout << format_table({"MODEL", "TYPE", "DATASET", "VERSION", "ACCURACY", "UPDATED"}, rows);
  return 0;
}

int cmd_cancel(const Client& client, const Output& out, const std::string& job_id) {
  Reply reply = client.del("/jobs/" + job_id);
  if (out.json) return print_json(reply), 0;
  std::cout << fmt::format("job {}: {}\n", job_id, text(reply.body, "state"));
  return 0;
}

int cmd_predict(const Client& client, const Output& out, const std::string& model,
                const std::vector<std::string>& images, int top) {
  for (const auto& path : images) {
    const std::string name = path.substr(path.find_last_of('/') + 1);
    Reply reply = client.post_image("/classify?model_id=" + model, name, read_file_bytes(path));
    if (out.json) {
      print_json(reply);
      continue;
    }
    const json& r = reply.body;
    std::cout << fmt::format("{}: {} ({:.1f}%) model {} version {}\n", path, text(r, "class"),
                             100 * number(r, "probability").value_or(0), text(r, "model_id"), text(r, "version"));
    if (top > 1 && r.contains("probabilities") && r.contains("classes")) {
      std::vector<std::pair<double, std::string>> ranked;
      for (std::size_t i = 0; i < r["probabilities"].size() && i < r["classes"].size(); ++i) {
        ranked.emplace_back(r["probabilities"][i].get<double>(), r["classes"][i].get<std::string>());
      }
      std::sort(ranked.rbegin(), ranked.rend());
      for (std::size_t i = 0; i < ranked.size() && i < static_cast<std::size_t>(top); ++i) {
        std::cout << fmt::format("  {:<16} {:5.1f}%\n", ranked[i].second, 100 * ranked[i].first);
      }
    }
  }
  return 0;
}

int cmd_train(const Client& client, const Output& out, const TrainOptions& o) {
  json spec = {{"model_id", o.model_id.empty() ? default_model_id(o.dataset) : o.model_id},
               {"dataset", o.dataset},
               {"model_type", o.model_type},
               {"trainers", o.trainers},
               {"train_opts", {{"epochs", o.epochs}}}};
  if (o.min_trainers) spec["min_trainers"] = *o.min_trainers;
  if (o.examples) spec["example_idxs"] = {0, *o.examples};
  if (o.test_examples) spec["test_idxs"] = {0, *o.test_examples};
  if (o.batch_size) spec["train_opts"]["batch_size"] = *o.batch_size;
  if (o.lr) spec["train_opts"]["lr"] = *o.lr;
  if (o.patience) spec["train_opts"]["patience"] = *o.patience;
  if (!o.publish.empty()) spec["train_opts"]["publish"] = o.publish;
  Reply reply = client.post_json("/train", spec);
  const std::string job_id = text(reply.body, "job_id");
  if (out.json) {
    print_json(reply);
  } else {
    std::cout << fmt::format("job {} model {}: {} ({} on {}, {} epoch{}{})\n", job_id,
                             spec["model_id"].get<std::string>(), text(reply.body, "state"), o.model_type, o.dataset,
                             o.epochs, o.epochs == 1 ? "" : "s",
                             o.trainers > 1 ? fmt::format(", {} trainers", o.trainers) : "");
  }
  if (!o.follow) return 0;
  return follow_job(client, out, job_id, o.poll);
}

namespace {

/// The last line of a followed job: its final accuracy, or its error.
int report_end(const Client& client, const Output& out, const json& job) {
  const std::string state = text(job, "state");
  if (out.json) return state == "succeeded" ? 0 : kExitFailed;
  if (state == "succeeded") {
    std::string versions;
    try {
      json meta = client.get("/models/" + text(job, "model_id")).body;
      versions = fmt::format(", version {}", text(meta, "version"));
    } catch (const CliError&) {
    }
    std::cout << fmt::format("succeeded: model {}{}, test accuracy {} after {} epoch{}, {}\n", text(job, "model_id"),
                             versions, fixed(number(job, "accuracy"), 4), text(job, "epochs"),
                             text(job, "epochs") == "1" ? "" : "s", format_duration(job.value("duration_s", json())));
    return 0;
  }
  std::cout << fmt::format("{}: job {} model {}{}\n", state, text(job, "job_id"), text(job, "model_id"),
                           job.contains("error") && job["error"].is_string()
                               ? " " + text(job, "failure") + ": " + job["error"].get<std::string>()
                               : "");
  return kExitFailed;
}

}  // namespace

int follow_job(const Client& client, const Output& out, const std::string& job_id, std::chrono::milliseconds poll) {
  std::string last;
  auto unreachable_since = std::chrono::steady_clock::now();
  bool unreachable = false;
  const int bar = std::clamp(out.width - 80, 10, 30);
  for (;;) {
    json job;
    try {
      Reply reply = client.get("/jobs/" + job_id);
      job = reply.body;
      unreachable = false;
      if (out.json && reply.text != last) std::cout << reply.body.dump() << std::endl;
      if (out.json) last = reply.text;
    } catch (const CliError& e) {
      // A controller replica handing over, or restarting: keep asking for a while.
      if (e.code != kExitUnreachable) throw;
      if (!unreachable) unreachable_since = std::chrono::steady_clock::now();
      unreachable = true;
      if (std::chrono::steady_clock::now() - unreachable_since > std::chrono::seconds(60)) throw;
      std::this_thread::sleep_for(poll);
      continue;
    }
    const std::string state = text(job, "state");
    const std::optional<JobState> parsed = parse_job_state(state);
    const bool done = parsed && is_terminal(*parsed);
    if (!out.json) {
      std::string line;
      if (state == "queued") {
        line = "queued, waiting for a free trainer";
      } else if (state == "running" && number(job, "epoch").value_or(0) == 0) {
        line = "started on " + text(job, "trainer") + ", loading the dataset";
      } else {
        line = progress_line(job, out.terminal ? bar : 0);
      }
      // What counts as a change on a pipe: the state, the epoch or the step, not the ETA ticking.
      const std::string key =
          fmt::format("{} {} {} {}", state, text(job, "epoch"), text(job, "step"), line.substr(0, 8));
      if (out.terminal) {
        // One line redrawn in place; cleared to the end so a shorter line leaves nothing behind.
        std::cout << "\r" << line.substr(0, static_cast<std::size_t>(std::max(20, out.width - 1))) << "\x1b[K"
                  << (done ? "\n" : "") << std::flush;
      } else if (key != last) {
        std::cout << line << std::endl;  // a pipe: one line per change, no carriage returns
      }
      last = key;
    }
    if (done) return report_end(client, out, job);
    std::this_thread::sleep_for(poll);
  }
}

}  // namespace mlswarm::cli_tool
