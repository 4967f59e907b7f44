#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "mlswarm/http.h"

namespace mlswarm {

/// Reads a secret from a file (a Docker Swarm secret under /run/secrets/, or any file):
/// the whole file less trailing whitespace. Throws Error(kInvalidArgument, field = `what`)
/// when it is missing, unreadable, empty, over 4 KiB or holds characters a bearer token
/// cannot carry (whitespace inside, control bytes). The token itself never appears in
/// the message.
std::string read_token_file(const std::filesystem::path& path, std::string_view what);

/// Compares two secrets in time that depends only on their lengths' maximum, not on
/// where they first differ.
bool tokens_equal(std::string_view a, std::string_view b) noexcept;

/// The token of an "Authorization: Bearer <token>" header, or empty when there is none.
std::string bearer_token(const HttpRequest& request);

/// Throws Error(kUnauthorized) when `request` carries no bearer token and Error(kForbidden)
/// when it carries another one than `expected`. An empty `expected` means open: no check.
/// `realm` goes into the message so the client knows which token is asked for.
void require_token(const HttpRequest& request, const std::string& expected, std::string_view realm);

}  // namespace mlswarm
