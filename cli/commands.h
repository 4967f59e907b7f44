#pragma once

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client.h"

namespace mlswarm::cli_tool {

/// How the commands print: tables and progress for people, or the controller's raw JSON.
struct Output {
  bool json = false;      ///< --json: each reply as one line of raw JSON
  bool terminal = false;  ///< stdout is a terminal: the progress bar redraws one line in place
  int width = 100;        ///< the terminal's columns
};

int cmd_status(const Client& client, const Output& out);
int cmd_jobs(const Client& client, const Output& out, const std::string& state);
int cmd_models(const Client& client, const Output& out);
int cmd_cancel(const Client& client, const Output& out, const std::string& job_id);
int cmd_predict(const Client& client, const Output& out, const std::string& model,
                const std::vector<std::string>& images, int top);

struct TrainOptions {
  std::string model_id;  ///< empty: <dataset>-<time>
  std::string dataset = "fashion-mnist";
  std::string model_type = "convnet";
  int epochs = 3;
  int trainers = 1;
  std::optional<int> min_trainers;
  std::optional<long> examples;       ///< the first N training images; all when unset
  std::optional<long> test_examples;  ///< evaluate on the first N test images; all when unset
  std::optional<int> batch_size;
  std::optional<double> lr;
  std::optional<int> patience;
  std::string publish;  ///< "", "last" or "best"
  bool follow = false;
  std::chrono::milliseconds poll{500};
};
/// POST /train; with `follow`, shows the job's progress until it ends: exit 0 with its final
/// accuracy when it succeeds, 1 with its error when it fails or is cancelled.
int cmd_train(const Client& client, const Output& out, const TrainOptions& options);
/// Follows an existing job (mlswarm jobs --follow ID).
int follow_job(const Client& client, const Output& out, const std::string& job_id, std::chrono::milliseconds poll);

/// A number field of a reply, nullopt when missing or not a number.
std::optional<double> number(const nlohmann::json& j, const char* key);
/// A field as text: strings as they are, null or missing as "-", others as JSON.
std::string text(const nlohmann::json& j, const char* key);
/// `v` with `digits` decimals, "-" for none.
std::string fixed(const std::optional<double>& v, int digits);
/// --json: the reply's body on one line.
void print_json(const Reply& reply);

/// Plain-text table: a header row and the rows, columns padded to their widest cell.
std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
/// One progress line of a running job: "epoch 2/3 [#####.....] 54% step 120/469 loss 0.4123
/// 1,523 images/s ETA 42 s", the bar `bar_width` wide (0: no bar).
std::string progress_line(const nlohmann::json& job, int bar_width);
/// "42 s", "3 min 5 s", "1 h 2 min"; "-" for null.
std::string format_duration(const nlohmann::json& seconds);

}  // namespace mlswarm::cli_tool
