#pragma once

// The dashboard's files, compiled into ml_controller (cmake/embed_files.cmake): the page
// needs nothing from any other host, and a controller image needs no files beside its binary.

#include <cstddef>
#include <string_view>

namespace mlswarm::dashboard {

struct EmbeddedFile {
  std::string_view url;  ///< the path it is served at, e.g. "/ui/app.js"
  std::string_view body;
};

extern const EmbeddedFile kEmbeddedFiles[];
extern const std::size_t kEmbeddedFileCount;

/// The file served at `url`, or nullptr.
const EmbeddedFile* find_file(std::string_view url) noexcept;
/// "text/html; charset=utf-8", "text/javascript; charset=utf-8", "text/css; charset=utf-8", or
/// "application/octet-stream", by the url's extension.
std::string_view content_type(std::string_view url) noexcept;

}  // namespace mlswarm::dashboard
