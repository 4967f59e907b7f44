#include "mlswarm/folder_dataset.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/image_decode.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/request_fields.h"

namespace mlswarm {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

constexpr std::uintmax_t kMaxImageFileBytes = 64u << 20;

std::uint64_t fnv1a(std::uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}
constexpr std::uint64_t kFnvOffset = 14695981039346656037ull;

std::string read_bytes(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error(ErrorCode::kDataError, fmt::format("{}: {}", path.string(), ec.message()));
  if (size > kMaxImageFileBytes) throw Error(ErrorCode::kInvalidArgument, "over 64 MiB", "image");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kDataError, fmt::format("{}: cannot be read", path.string()));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes;
}

/// A class folder's name becomes a class name in answers: printable, at most 100 bytes.
bool valid_class_name(const std::string& name) {
  if (name.empty() || name.size() > 100 || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) { return c >= 0x20 && c != 0x7f; });
}

unsigned thread_count(unsigned threads) {
  if (threads > 0) return threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

/// Runs work(i) for i in [0, n) on `threads` threads.
template <typename Work>
void parallel_for(std::size_t n, unsigned threads, Work&& work) {
  std::atomic<std::size_t> next{0};
  auto run = [&] {
    for (std::size_t i = next++; i < n; i = next++) work(i);
  };
  std::vector<std::jthread> pool;
  for (unsigned t = 1; t < std::min<std::size_t>(threads, n); ++t) pool.emplace_back(run);
  run();
}

struct Candidate {
  std::string path;  // relative to the folder
  int label = 0;
  bool test = false;
};

/// The images of one split folder (train/ or test/): class sub-folders, sorted. Files that are
/// not images by name are ignored silently (a README, .DS_Store); links out of HOME_DIR and
/// folders with names unfit for a class are skipped and named.
void list_split(const fs::path& folder, const fs::path& split, const fs::path& real_home,
                std::map<std::string, std::vector<std::string>>& by_class, std::vector<SkippedFile>& skipped) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder / split, ec)) {
    const std::string cls = entry.path().filename().string();
    const std::string rel_class = (split / cls).generic_string();
    if (!entry.is_directory(ec)) continue;
    if (!valid_class_name(cls)) {
      skipped.push_back({rel_class, "a class folder's name must be printable, 1-100 bytes, not starting with '.'"});
      continue;
    }
    if (!is_under(fs::weakly_canonical(entry.path(), ec), real_home)) {
      skipped.push_back({rel_class, "a link out of HOME_DIR"});
      continue;
    }
    auto& files = by_class[cls];
    for (const auto& file : fs::recursive_directory_iterator(entry.path(), ec)) {
      if (!is_image_name(file.path()) || file.is_directory(ec)) continue;
      const std::string rel = file.path().lexically_relative(folder).generic_string();
      if (!is_under(fs::weakly_canonical(file.path(), ec), real_home)) {
        skipped.push_back({rel, "a link out of HOME_DIR"});
        continue;
      }
      files.push_back(rel);
    }
    std::sort(files.begin(), files.end());
  }
}

/// Without test/: each class's files whose path hashes below the fraction are its test split;
/// a class of two or more images keeps at least one test image (its lowest hash).
void draw_test_split(std::vector<Candidate>& files, double fraction) {
  std::map<int, std::pair<std::uint64_t, std::size_t>> lowest;  // by label: hash, index
  std::map<int, bool> has_test;
  std::map<int, int> count;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::uint64_t h = fnv1a(kFnvOffset, files[i].path);
    files[i].test = static_cast<double>(h % 1'000'000) < fraction * 1'000'000;
    const int label = files[i].label;
    ++count[label];
    has_test[label] = has_test[label] || files[i].test;
    if (!lowest.count(label) || h < lowest[label].first) lowest[label] = {h, i};
  }
  for (const auto& [label, low] : lowest) {
    if (fraction > 0 && !has_test[label] && count[label] >= 2) files[low.second].test = true;
  }
}

int median(std::vector<int> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

/// Reads every candidate's header (the size and channels it declares); the unreadable ones
/// are skipped. Returns the kept candidates.
std::vector<Candidate> read_headers(const fs::path& folder, std::vector<Candidate> files, unsigned threads,
                                    std::vector<ImageHeader>& headers, std::vector<SkippedFile>& skipped) {
  std::vector<std::optional<ImageHeader>> read(files.size());
  std::vector<std::string> why(files.size());
  parallel_for(files.size(), threads, [&](std::size_t i) {
    try {
      const std::string bytes = read_bytes(folder / files[i].path);
      read[i] = read_image_header(bytes);
      if (read[i]->width <= 0 || read[i]->height <= 0 ||
          std::int64_t{read[i]->width} * read[i]->height > kDefaultMaxImagePixels) {
        why[i] = fmt::format("{} x {} pixels: over the {} pixels an image may have", read[i]->width, read[i]->height,
                             kDefaultMaxImagePixels);
        read[i].reset();
      }
    } catch (const Error& e) {
      why[i] = e.what();
    }
  });
  std::vector<Candidate> kept;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (!read[i]) {
      skipped.push_back({files[i].path, why[i]});
      continue;
    }
    kept.push_back(std::move(files[i]));
    headers.push_back(*read[i]);
  }
  return kept;
}

/// Decodes each file at the manifest's size into `images` (count x C*H*W), in order, and
/// returns the hash of the decoded files' paths and bytes. `failed[i]` is why file i did not decode ("" if
/// it did).
std::uint64_t decode_all(const fs::path& folder, const std::vector<std::string>& paths, int channels, int height,
                         int width, unsigned threads, std::vector<std::uint8_t>* images,
                         std::vector<std::string>& failed) {
  const std::size_t per_image = static_cast<std::size_t>(channels) * height * width;
  if (images != nullptr) images->assign(paths.size() * per_image, 0);
  std::vector<std::uint64_t> hashes(paths.size(), 0);
  failed.assign(paths.size(), "");
  parallel_for(paths.size(), threads, [&](std::size_t i) {
    try {
      const std::string bytes = read_bytes(folder / paths[i]);
      hashes[i] = fnv1a(fnv1a(kFnvOffset, paths[i]), bytes);
      const auto pixels = decode_image_bytes(bytes, channels, height, width);
      if (images != nullptr) std::copy(pixels.begin(), pixels.end(), images->begin() + i * per_image);
    } catch (const Error& e) {
      failed[i] = e.what();
    }
  });
  // Folded in path order, so that the order the files were listed in does not matter.
  std::vector<std::pair<std::string_view, std::uint64_t>> decoded;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (failed[i].empty()) decoded.emplace_back(paths[i], hashes[i]);
  }
  std::sort(decoded.begin(), decoded.end());
  std::uint64_t h = kFnvOffset;
  for (const auto& [path, file_hash] : decoded) {
    h = fnv1a(h, std::string_view(reinterpret_cast<const char*>(&file_hash), sizeof file_hash));
  }
  return h;
}

std::string hex(std::uint64_t h) { return fmt::format("{:016x}", h); }

void choose_shape(const FolderRequest& request, const std::vector<ImageHeader>& headers, FolderManifest& m) {
  std::vector<int> heights;
  std::vector<int> widths;
  bool all_grey = true;
  for (const auto& h : headers) {
    heights.push_back(h.height);
    widths.push_back(h.width);
    all_grey = all_grey && h.channels <= 2;
  }
  m.channels = request.channels.value_or(all_grey ? 1 : 3);
  m.height = request.height.value_or(std::clamp(median(heights), kMinFolderSide, kDefaultFolderMaxSide));
  m.width = request.width.value_or(std::clamp(median(widths), kMinFolderSide, kDefaultFolderMaxSide));
}

}  // namespace

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

bool is_under(const fs::path& path, const fs::path& root) {
  const auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  return r == root.end();
}

DatasetInfo FolderManifest::info() const {
  DatasetInfo info;
  info.name = name;
  info.channels = channels;
  info.height = height;
  info.width = width;
  info.class_names = classes;
  info.train_size = static_cast<std::int64_t>(train.size());
  info.test_size = static_cast<std::int64_t>(test.size());
  info.format = "folder";
  info.content_hash = content_hash;
  return info;
}

FolderRequest parse_folder_request(const json& body) {
  if (!body.is_object()) invalid_field("", "the body must be a JSON object");
  reject_unknown_fields(body, {"name", "path", "image_size", "channels", "test_fraction"}, "");
  FolderRequest r;
  if (!body.contains("name") || !body["name"].is_string()) invalid_field("name", "name (a string) is required");
  r.name = body["name"].get<std::string>();
  require_valid_id(r.name, "name");
  if (find_dataset_info(r.name) != nullptr) {
    invalid_field("name", fmt::format("'{}' is a built-in dataset's name", r.name));
  }
  r.path = "datasets/" + r.name;
  if (body.contains("path")) {
    if (!body["path"].is_string()) invalid_field("path", "path must be a string: a folder under HOME_DIR");
    r.path = body["path"].get<std::string>();
  }
  if (body.contains("image_size")) {
    const json& size = body["image_size"];
    if (!size.is_array() || size.size() != 2) invalid_field("image_size", "image_size must be [height, width]");
    r.height = static_cast<int>(
        get_int(json{{"h", size[0]}}, "h", "image_size[0]", std::nullopt, kMinFolderSide, kMaxFolderSide));
    r.width = static_cast<int>(
        get_int(json{{"w", size[1]}}, "w", "image_size[1]", std::nullopt, kMinFolderSide, kMaxFolderSide));
  }
  if (body.contains("channels")) {
    const auto c = get_int(body, "channels", "channels", std::nullopt, 1, 3);
    if (c == 2) invalid_field("channels", "channels must be 1 (grey) or 3 (colour)");
    r.channels = static_cast<int>(c);
  }
  r.test_fraction = get_number(body, "test_fraction", "test_fraction", 0.1, 0, 0.9);
  return r;
}

fs::path resolve_folder(const fs::path& home_dir, const std::string& path) {
  const fs::path p(path);
  if (path.empty() || p.is_absolute()) invalid_field("path", "path must be a folder relative to HOME_DIR");
  for (const auto& part : p) {
    if (part == "..") invalid_field("path", "path may not contain '..'");
  }
  std::error_code ec;
  const fs::path real_home = fs::canonical(home_dir, ec);
  if (ec) throw Error(ErrorCode::kInternal, fmt::format("HOME_DIR {}: {}", home_dir.string(), ec.message()));
  const fs::path real = fs::weakly_canonical(real_home / p, ec);
  if (ec || !is_under(real, real_home) || real == real_home) {
    invalid_field("path", fmt::format("'{}' leads out of HOME_DIR", path));
  }
  if (!fs::is_directory(real, ec)) invalid_field("path", fmt::format("'{}' is not a folder under HOME_DIR", path));
  if (!fs::is_directory(real / "train", ec)) {
    invalid_field("path", fmt::format("'{}' has no train/ folder (train/<class>/<images>)", path));
  }
  return real;
}

FolderManifest scan_image_folder(const fs::path& home_dir, const FolderRequest& request, unsigned threads) {
  threads = thread_count(threads);
  const fs::path folder = resolve_folder(home_dir, request.path);
  const fs::path real_home = fs::canonical(home_dir);
  FolderManifest m;
  m.name = request.name;
  m.path = request.path;
  m.test_fraction = request.test_fraction;
  std::error_code ec;
  m.test_folder = fs::is_directory(folder / "test", ec);
  std::map<std::string, std::vector<std::string>> train_files;
  std::map<std::string, std::vector<std::string>> test_files;
  list_split(folder, "train", real_home, train_files, m.skipped);
  if (m.test_folder) list_split(folder, "test", real_home, test_files, m.skipped);
  for (const auto& [cls, files] : train_files) m.classes.push_back(cls);
  if (m.classes.empty()) invalid_field("path", fmt::format("'{}/train' has no class folders", request.path));
  if (m.classes.size() > static_cast<std::size_t>(kMaxFolderClasses)) {
    invalid_field("path", fmt::format("{} classes: at most {}", m.classes.size(), kMaxFolderClasses));
  }
  std::vector<Candidate> candidates;
  for (std::size_t label = 0; label < m.classes.size(); ++label) {
    for (const auto& f : train_files[m.classes[label]]) candidates.push_back({f, static_cast<int>(label), false});
    for (const auto& f : test_files[m.classes[label]]) candidates.push_back({f, static_cast<int>(label), true});
  }
  for (const auto& [cls, files] : test_files) {
    if (!train_files.count(cls)) m.skipped.push_back({"test/" + cls, "a class that train/ does not have"});
  }
  if (static_cast<std::int64_t>(candidates.size()) > kMaxFolderImages) {
    invalid_field("path", fmt::format("{} images: at most {}", candidates.size(), kMaxFolderImages));
  }
  std::vector<ImageHeader> headers;
  candidates = read_headers(folder, std::move(candidates), threads, headers, m.skipped);
  if (candidates.empty()) invalid_field("path", fmt::format("'{}' holds no image that reads", request.path));
  choose_shape(request, headers, m);
  std::vector<std::string> paths;
  for (const auto& c : candidates) paths.push_back(c.path);
  std::vector<std::string> failed;
  m.content_hash = hex(decode_all(folder, paths, m.channels, m.height, m.width, threads, nullptr, failed));
  std::vector<Candidate> kept;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (failed[i].empty()) {
      kept.push_back(candidates[i]);
    } else {
      m.skipped.push_back({candidates[i].path, failed[i]});
    }
  }
  if (!m.test_folder) draw_test_split(kept, m.test_fraction);
  for (const auto& c : kept) (c.test ? m.test : m.train).push_back({c.path, c.label});
  std::vector<int> per_class(m.classes.size(), 0);
  for (const auto& f : m.train) ++per_class[static_cast<std::size_t>(f.label)];
  for (std::size_t c = 0; c < per_class.size(); ++c) {
    if (per_class[c] == 0) {
      invalid_field("path", fmt::format("class '{}' has no training image that decodes", m.classes[c]));
    }
  }
  if (m.test.empty()) invalid_field("test_fraction", "the test split would be empty: add test/ or raise test_fraction");
  std::sort(m.skipped.begin(), m.skipped.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  m.registered_at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  return m;
}

json to_json(const FolderManifest& m) {
  auto files = [](const std::vector<FolderFile>& list) {
    json out = json::array();
    for (const auto& f : list) out.push_back({f.path, f.label});
    return out;
  };
  json skipped = json::array();
  for (const auto& s : m.skipped) skipped.push_back({{"path", s.path}, {"why", s.why}});
  return {{"name", m.name},
          {"path", m.path},
          {"input_shape", {m.channels, m.height, m.width}},
          {"test_fraction", m.test_fraction},
          {"test_folder", m.test_folder},
          {"classes", m.classes},
          {"content_hash", m.content_hash},
          {"registered_at", m.registered_at},
          {"skipped", skipped},
          {"train", files(m.train)},
          {"test", files(m.test)}};
}

FolderManifest folder_manifest_from_json(const json& j) {
  try {
    FolderManifest m;
    m.name = j.at("name").get<std::string>();
    require_valid_id(m.name, "name");
    m.path = j.at("path").get<std::string>();
    const json& shape = j.at("input_shape");
    m.channels = static_cast<int>(checked_int(shape.at(0), 1, 3, "input_shape[0]"));
    m.height = static_cast<int>(checked_int(shape.at(1), kMinFolderSide, kMaxFolderSide, "input_shape[1]"));
    m.width = static_cast<int>(checked_int(shape.at(2), kMinFolderSide, kMaxFolderSide, "input_shape[2]"));
    m.test_fraction = j.at("test_fraction").get<double>();
    m.test_folder = j.at("test_folder").get<bool>();
    m.classes = j.at("classes").get<std::vector<std::string>>();
    if (m.classes.empty() || m.classes.size() > static_cast<std::size_t>(kMaxFolderClasses)) {
      throw Error(ErrorCode::kDataError, "a manifest's classes must number 1..256");
    }
    m.content_hash = j.at("content_hash").get<std::string>();
    m.registered_at = j.value("registered_at", 0.0);
    for (const auto& s : j.at("skipped")) m.skipped.push_back({s.at("path"), s.at("why")});
    for (auto* split : {&m.train, &m.test}) {
      for (const auto& f : j.at(split == &m.train ? "train" : "test")) {
        const auto label = checked_int(f.at(1), 0, static_cast<std::int64_t>(m.classes.size()) - 1, "label");
        const std::string path = f.at(0).get<std::string>();
        if (path.empty() || fs::path(path).is_absolute() || path.find("..") != std::string::npos) {
          throw Error(ErrorCode::kDataError, fmt::format("a manifest's file '{}' is not a path in its folder", path));
        }
        split->push_back({path, static_cast<int>(label)});
      }
    }
    return m;
  } catch (const json::exception& e) {
    throw Error(ErrorCode::kDataError, fmt::format("a folder dataset's manifest does not read: {}", e.what()));
  }
}

fs::path folder_manifest_path(const fs::path& home_dir, const std::string& name) {
  return home_dir / "datasets" / name / "manifest.json";
}

void write_folder_manifest(const fs::path& home_dir, const FolderManifest& manifest) {
  const fs::path path = folder_manifest_path(home_dir, manifest.name);
  fs::create_directories(path.parent_path());
  write_file_atomic(path, to_json(manifest).dump());
}

std::optional<FolderManifest> read_folder_manifest(const fs::path& home_dir, const std::string& name) {
  require_valid_id(name, "dataset");
  if (find_dataset_info(name) != nullptr) return std::nullopt;
  const fs::path path = folder_manifest_path(home_dir, name);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  std::ifstream in(path);
  const json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) throw Error(ErrorCode::kDataError, fmt::format("{}: not JSON", path.string()));
  FolderManifest m = folder_manifest_from_json(j);
  if (m.name != name)
    throw Error(ErrorCode::kDataError, fmt::format("{}: the manifest of '{}'", path.string(), m.name));
  return m;
}

std::vector<std::string> folder_dataset_names(const fs::path& home_dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(home_dir / "datasets", ec)) {
    const std::string name = entry.path().filename().string();
    if (find_dataset_info(name) != nullptr || !fs::is_regular_file(entry.path() / "manifest.json", ec)) continue;
    try {
      require_valid_id(name, "dataset");
      names.push_back(name);
    } catch (const Error&) {
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

DatasetInfo require_dataset(const std::string& name, const fs::path& home_dir) {
  if (const DatasetInfo* info = find_dataset_info(name)) return *info;
  std::optional<FolderManifest> m;
  try {
    m = read_folder_manifest(home_dir, name);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
  }
  if (!m) {
    std::vector<std::string> known = dataset_names();
    for (auto& n : folder_dataset_names(home_dir)) known.push_back(std::move(n));
    invalid_field("dataset", fmt::format("unknown dataset '{}'; known: {} (register a folder of images with POST "
                                         "/datasets)",
                                         name, fmt::join(known, ", ")));
  }
  return m->info();
}

Dataset load_folder_dataset(const fs::path& home_dir, const FolderManifest& m, unsigned threads) {
  threads = thread_count(threads);
  const fs::path folder = resolve_folder(home_dir, m.path);
  Dataset dataset;
  dataset.info = m.info();
  std::vector<std::string> all;
  for (const auto* split : {&m.train, &m.test}) {
    for (const auto& f : *split) all.push_back(f.path);
  }
  std::vector<std::string> failed;
  std::vector<std::uint8_t> images;
  const std::uint64_t got = decode_all(folder, all, m.channels, m.height, m.width, threads, &images, failed);
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (!failed[i].empty()) {
      throw Error(
          ErrorCode::kDataError,
          fmt::format("dataset '{}': {} no longer decodes ({}); register the folder again", m.name, all[i], failed[i]));
    }
  }
  if (hex(got) != m.content_hash) {
    throw Error(ErrorCode::kDataError, fmt::format("dataset '{}': the folder {} changed since it was registered "
                                                   "(content hash {} against {}); register it again",
                                                   m.name, m.path, hex(got), m.content_hash));
  }
  const std::size_t per_image = static_cast<std::size_t>(m.channels) * m.height * m.width;
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < all.size(); ++i) index[all[i]] = i;
  for (auto [split, out] : {std::pair{&m.train, &dataset.train}, std::pair{&m.test, &dataset.test}}) {
    out->count = static_cast<std::int64_t>(split->size());
    out->images.reserve(split->size() * per_image);
    for (const auto& f : *split) {
      const std::size_t i = index.at(f.path);
      out->images.insert(out->images.end(), images.begin() + i * per_image, images.begin() + (i + 1) * per_image);
      out->labels.push_back(static_cast<std::uint8_t>(f.label));
    }
  }
  return dataset;
}

}  // namespace mlswarm
