#pragma once

// Small blocking HTTP clients for the daemons' and the CLI's one-shot commands (--healthcheck,
// --fetch, `mlswarm healthcheck`). The controller's calls to trainers are in
// controller/control/http_call.h.

#include <chrono>
#include <optional>
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

/// The exit code of a container's health check: 0 when GET /healthz on 127.0.0.1:port answers
/// 200 within 2 s, else 1.
int healthz_exit_code(int port, bool tls);

/// What both daemons do instead of starting when asked: --fetch URL (the body to stdout, with
/// `bearer` when set) or --healthcheck (healthz_exit_code on the daemon's own port).
struct OneShotCommand {
  std::string fetch_url;
  std::string bearer;
  bool healthcheck = false;
  int port = 0;
  bool tls = false;
};
/// The exit code of the command asked for; nullopt when none was (the daemon starts).
std::optional<int> run_one_shot(const OneShotCommand& command);

}  // namespace mlswarm
