#include "embedded_files.h"

namespace mlswarm::dashboard {

const EmbeddedFile* find_file(std::string_view url) noexcept {
  for (std::size_t i = 0; i < kEmbeddedFileCount; ++i) {
    if (kEmbeddedFiles[i].url == url) return &kEmbeddedFiles[i];
  }
  return nullptr;
}

std::string_view content_type(std::string_view url) noexcept {
  auto ends_with = [url](std::string_view suffix) {
    return url.size() >= suffix.size() && url.substr(url.size() - suffix.size()) == suffix;
  };
  if (ends_with(".html")) return "text/html; charset=utf-8";
  if (ends_with(".js")) return "text/javascript; charset=utf-8";
  if (ends_with(".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

}  // namespace mlswarm::dashboard
