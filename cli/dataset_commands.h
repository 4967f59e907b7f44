#pragma once

// mlswarm datasets and mlswarm dataset add: the datasets a controller trains on, and a folder of
// the user's own images made one of them.

#include <filesystem>
#include <optional>
#include <string>

#include "client.h"
#include "commands.h"

namespace mlswarm::cli_tool {

struct DatasetAddOptions {
  std::string name;
  std::string dir;         ///< a local folder (train/<class>/..., optionally test/<class>/...)
  std::string home_dir;    ///< the controller's HOME_DIR as this machine sees it ("": DIR is a path under it)
  std::string image_size;  ///< "HxW", or "" for the median of the images
  int channels = 0;        ///< 0: the controller's choice (1 when every image is grey)
  std::optional<double> test_fraction;
};

/// GET /datasets as a table.
int cmd_datasets(const Client& client, const Output& out);
/// Copies DIR's images to HOME_DIR/datasets/NAME (a progress line on a terminal), unless DIR is
/// already under HOME_DIR, then registers it (POST /datasets) and prints what the scan found.
int cmd_dataset_add(const Client& client, const Output& out, const DatasetAddOptions& options);

}  // namespace mlswarm::cli_tool
