#include "dataset_commands.h"

#include <algorithm>
#include <iostream>

#include <fmt/format.h>

#include "mlswarm/folder_dataset.h"

namespace mlswarm::cli_tool {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// The image files under DIR's train/ and test/, relative to DIR.
std::vector<fs::path> images_of(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const char* split : {"train", "test"}) {
    if (!fs::is_directory(dir / split, ec)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(dir / split, ec)) {
      if (entry.is_regular_file(ec) && is_image_name(entry.path()))
        files.push_back(entry.path().lexically_relative(dir));
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

/// Copies the images (those not already there with the same size), printing progress.
void copy_images(const fs::path& from, const fs::path& to, const Output& out) {
  const std::vector<fs::path> files = images_of(from);
  if (files.empty()) throw CliError(fmt::format("{} has no images under train/<class>/", from.string()), 2);
  std::size_t copied = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::error_code ec;
    const fs::path target = to / files[i];
    if (!(fs::exists(target, ec) && fs::file_size(target, ec) == fs::file_size(from / files[i], ec))) {
      fs::create_directories(target.parent_path());
      fs::copy_file(from / files[i], target, fs::copy_options::overwrite_existing, ec);
      if (ec) throw CliError(fmt::format("cannot copy {}: {}", (from / files[i]).string(), ec.message()), 1);
      ++copied;
    }
    if (out.terminal && !out.json && (i % 200 == 0 || i + 1 == files.size())) {
      std::cout << fmt::format("\rcopying to {}: {}/{} files", to.string(), i + 1, files.size()) << std::flush;
    }
  }
  if (!out.json) {
    std::cout << (out.terminal ? "\n" : "")
              << fmt::format("{} of {} files copied to {}\n", copied, files.size(), to.string());
  }
}

}  // namespace

int cmd_datasets(const Client& client, const Output& out) {
  Reply reply = client.get("/datasets");
  if (out.json) return print_json(reply), 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : reply.body.value("datasets", json::array())) {
    const json shape = d.value("input_shape", json::array());
    rows.push_back(
        {text(d, "name"),
         shape.size() == 3 ? fmt::format("{}x{}x{}", shape[0].dump(), shape[1].dump(), shape[2].dump()) : "-",
         text(d, "num_classes"), text(d, "train_size"), text(d, "test_size"), text(d, "format")});
  }
  std::cout << format_table({"NAME", "SHAPE", "CLASSES", "TRAIN", "TEST", "FORMAT"}, rows);
  return 0;
}

int cmd_dataset_add(const Client& client, const Output& out, const DatasetAddOptions& o) {
  json body = {{"name", o.name}};
  std::error_code ec;
  const fs::path dir = fs::weakly_canonical(fs::path(o.dir), ec);
  if (o.home_dir.empty()) {
    body["path"] = o.dir;  // a folder under the controller's HOME_DIR, as it names it
  } else {
    const fs::path home = fs::weakly_canonical(fs::path(o.home_dir), ec);
    if (!fs::is_directory(home, ec)) throw CliError(fmt::format("--home-dir {} is not a folder", o.home_dir), 2);
    if (!fs::is_directory(dir, ec)) throw CliError(fmt::format("{} is not a folder", o.dir), 2);
    if (is_under(dir, home) && dir != home) {
      body["path"] = dir.lexically_relative(home).generic_string();
    } else {
      copy_images(dir, home / "datasets" / o.name, out);
    }
  }
  if (!o.image_size.empty()) {
    int h = 0;
    int w = 0;
    char x = 0;
    if (std::sscanf(o.image_size.c_str(), "%d%c%d", &h, &x, &w) != 3 || (x != 'x' && x != 'X')) {
      throw CliError("--image-size takes HxW, such as 64x64", 2);
    }
    body["image_size"] = {h, w};
  }
  if (o.channels > 0) body["channels"] = o.channels;
  if (o.test_fraction) body["test_fraction"] = *o.test_fraction;
  Reply reply = client.post_json("/datasets", body);
  if (out.json) return print_json(reply), 0;
  const json& d = reply.body;
  const json shape = d.value("input_shape", json::array());
  std::cout << fmt::format("dataset {} registered: {} classes, {} train and {} test images, resized to {}\n",
                           text(d, "name"), text(d, "num_classes"), text(d, "train_size"), text(d, "test_size"),
                           shape.dump());
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : d.value("classes", json::array()))
    rows.push_back({text(c, "name"), text(c, "train"), text(c, "test")});
  std::cout << format_table({"CLASS", "TRAIN", "TEST"}, rows);
  const json skipped = d.value("skipped", json::array());
  if (!skipped.empty()) std::cout << fmt::format("{} files skipped:\n", skipped.size());
  for (const auto& s : skipped) std::cout << fmt::format("  {}: {}\n", text(s, "path"), text(s, "why"));
  return 0;
}

}  // namespace mlswarm::cli_tool
