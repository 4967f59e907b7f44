#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace mlswarm {

/// Replaces `path` with `data` so that a reader sees the old file or the new one, never
/// half of either, and a crash leaves one of the two on disk: the bytes go to a temporary
/// file in the same directory, are fsynced, renamed over `path`, and the directory is
/// fsynced. Creates missing parent directories. Throws Error(kInternal) on I/O failure,
/// leaving `path` untouched and no temporary file behind.
void write_file_atomic(const std::filesystem::path& path, std::string_view data);

/// Reads a whole file. Throws Error(kDataError) when missing, unreadable or over `max_bytes`.
std::string read_file(const std::filesystem::path& path, std::size_t max_bytes);

}  // namespace mlswarm
