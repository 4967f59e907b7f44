#pragma once

// Small blocking HTTP clients for the daemons' and the CLI's one-shot commands (--healthcheck,
// --fetch, `mlswarm healthcheck`). The controller's calls to trainers are in
// controller/control/http_call.h.

#include <chrono>
#include <string>

namespace mlswarm {

/// A blocking GET of http://host:port/path with short deadlines, for `--healthcheck`.
/// Returns the HTTP status, or -1 when nothing answered.
int http_probe(const std::string& host, int port, const std::string& path, std::chrono::milliseconds timeout,
               bool tls = false);

/// GETs an http:// or https:// URL (host:port/path), writes the body to stdout; returns 0
/// on a 2xx, 1 otherwise (the reason on stderr). For `--fetch`, since the images carry no
/// curl. `bearer` (may be empty) goes into an Authorization header; https does not verify
/// the certificate (a self-signed one is the common case inside a cluster).
int fetch_and_print(const std::string& url, const std::string& bearer = {});

}  // namespace mlswarm
