// The dashboard's routes: its files, compiled into the binary.

#include "controller_api.h"

#include <fmt/format.h>

#include "embedded_files.h"
#include "mlswarm/build_info.h"
#include "mlswarm/error.h"

namespace mlswarm {

using nlohmann::json;

namespace {

/// A dashboard file with headers that keep the page to itself: scripts, styles and calls only
/// from this origin, no framing, no referrer.
HttpReply dashboard_reply(std::string_view url) {
  const dashboard::EmbeddedFile* file = dashboard::find_file(url);
  if (file == nullptr) throw Error(ErrorCode::kNotFound, fmt::format("no dashboard file {}", url));
  HttpReply reply;
  reply.content_type = std::string(dashboard::content_type(url));
  reply.body = std::string(file->body);
  reply.headers["Content-Security-Policy"] =
      "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
      "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
  reply.headers["X-Content-Type-Options"] = "nosniff";
  reply.headers["Referrer-Policy"] = "no-referrer";
  reply.headers["Cache-Control"] = "no-cache";
  return reply;
}

}  // namespace

void ControllerApi::add_dashboard_routes() {
  auto get = [this](std::string pattern, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), Access::kOpen, 0, std::move(handler)});
  };
  get("/", [](const HttpRequest&, const RouteParams&) { return dashboard_reply("/ui/index.html"); });
  get("/ui/config.json", [this](const HttpRequest&, const RouteParams&) {
    return HttpReply::json(200, {{"auth", !options_.api_token.empty()},
                                 {"public_reads", options_.public_reads},
                                 {"version", mlswarm_version()}});
  });
  get("/ui/{file}", [](const HttpRequest&, const RouteParams& p) { return dashboard_reply("/ui/" + p[0]); });
}

}  // namespace mlswarm
