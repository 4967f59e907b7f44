#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlswarm/dataset.h"

namespace mlswarm {

/// A dataset that is a folder of images, a sub-folder per class (torchvision's ImageFolder):
///   <path>/train/<class>/*.{png,jpg,jpeg,bmp}   and optionally   <path>/test/<class>/...
/// <path> lies under HOME_DIR (by default HOME_DIR/datasets/<name>). Registering scans it once
/// and writes its manifest to HOME_DIR/datasets/<name>/manifest.json: the classes, every file
/// of each split with its label, the files skipped and why, the size every image is resized
/// to, and a hash of the files' contents, so every trainer reads the same list and a folder
/// that changed since is refused until registered again.

/// At most this many classes (labels are one byte).
inline constexpr int kMaxFolderClasses = 256;
/// At most this many images in a folder dataset.
inline constexpr std::int64_t kMaxFolderImages = 2'000'000;
/// The sides a folder dataset's images may be resized to; without `image_size` the median of
/// the images' sides, capped at kDefaultFolderMaxSide.
inline constexpr int kMinFolderSide = 8;
inline constexpr int kMaxFolderSide = 512;
inline constexpr int kDefaultFolderMaxSide = 224;

/// Whether a file's name makes it an image of a folder dataset: .png, .jpg, .jpeg or .bmp, any case.
bool is_image_name(const std::filesystem::path& path);
/// Whether `path` is `root` or lies below it, component by component (both already resolved).
bool is_under(const std::filesystem::path& path, const std::filesystem::path& root);

struct FolderFile {
  std::string path;  ///< relative to the dataset's folder, '/'-separated
  int label = 0;
};

struct SkippedFile {
  std::string path;
  std::string why;
};

struct FolderManifest {
  std::string name;
  std::string path;  ///< the folder, relative to HOME_DIR
  int channels = 3;
  int height = 0;
  int width = 0;
  double test_fraction = 0.1;
  bool test_folder = false;  ///< the test split is the folder's test/ (else drawn from train/)
  std::vector<std::string> classes;
  std::vector<FolderFile> train;
  std::vector<FolderFile> test;
  std::vector<SkippedFile> skipped;
  std::string content_hash;  ///< 16 hex digits: FNV-1a over every kept file's path and bytes
  double registered_at = 0;

  DatasetInfo info() const;
};

/// POST /datasets: what the request asks. Throws Error(kInvalidArgument) naming the field.
struct FolderRequest {
  std::string name;
  std::string path;  ///< relative to HOME_DIR; default "datasets/<name>"
  std::optional<int> height;
  std::optional<int> width;
  std::optional<int> channels;  ///< 1 or 3; default: 1 when every image is grey, else 3
  double test_fraction = 0.1;
};
FolderRequest parse_folder_request(const nlohmann::json& body);

/// The folder of a request, checked: relative, no "..", an existing directory whose real path
/// (symbolic links resolved) lies under HOME_DIR's. Throws Error(kInvalidArgument, "path").
std::filesystem::path resolve_folder(const std::filesystem::path& home_dir, const std::string& path);

/// Scans the folder: classes are train/'s sub-folders, sorted; a file that is not an image,
/// does not decode, is over the pixel cap or links out of HOME_DIR is skipped and named. The
/// test split is test/ when there is one, else a reproducible test_fraction of each class
/// (chosen by a hash of the file's path). Decodes every kept image once (on `threads`).
/// Throws Error(kInvalidArgument) when nothing trainable is left (no class, a class with no
/// image, over kMaxFolderClasses or kMaxFolderImages).
FolderManifest scan_image_folder(const std::filesystem::path& home_dir, const FolderRequest& request,
                                 unsigned threads = 0);

nlohmann::json to_json(const FolderManifest& manifest);
/// Throws Error(kDataError) for a manifest that does not read back.
FolderManifest folder_manifest_from_json(const nlohmann::json& j);

std::filesystem::path folder_manifest_path(const std::filesystem::path& home_dir, const std::string& name);
/// Writes the manifest atomically.
void write_folder_manifest(const std::filesystem::path& home_dir, const FolderManifest& manifest);
/// The registered manifest of `name`, or nullopt when there is none. Throws Error(kDataError)
/// for one that does not read.
std::optional<FolderManifest> read_folder_manifest(const std::filesystem::path& home_dir, const std::string& name);
/// The names of the registered folder datasets, sorted.
std::vector<std::string> folder_dataset_names(const std::filesystem::path& home_dir);

/// A dataset's facts: a built-in one's, or a registered folder's (from its manifest). Throws
/// Error(kInvalidArgument, "dataset") naming the known ones for a name that is neither, and
/// Error(kDataError) for a manifest that does not read.
DatasetInfo require_dataset(const std::string& name, const std::filesystem::path& home_dir);

/// Decodes every file of the manifest (resized to its size, on `threads`) into a Dataset.
/// Throws Error(kDataError) when a file no longer decodes or the contents' hash differs from
/// the manifest's (the folder changed since it was registered).
Dataset load_folder_dataset(const std::filesystem::path& home_dir, const FolderManifest& manifest,
                            unsigned threads = 0);

}  // namespace mlswarm
