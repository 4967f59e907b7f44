#pragma once

#include <cstdint>
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

/// Frames `payload` as "MLSWSEAL", its CRC-32 and its length, then the payload, so that a
/// reader can tell a complete file from a torn or corrupted one.
std::string seal(std::string_view payload);

/// The payload of a sealed frame. Throws Error(kDataError) naming `what` when the frame is
/// not one, is cut short or fails its CRC.
std::string unseal(std::string_view sealed, std::string_view what);

/// CRC-32 (zlib's) of a byte string.
std::uint32_t crc32_of(std::string_view bytes);

/// Reads a whole file. Throws Error(kDataError) when missing, unreadable or over `max_bytes`.
std::string read_file(const std::filesystem::path& path, std::size_t max_bytes);

}  // namespace mlswarm
