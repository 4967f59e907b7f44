// Served names and their rollouts: PUT/GET/DELETE /deployments/{name}, GET /deployments,
// POST/DELETE /deployments/{name}/rollout.

#include "controller_api.h"

#include <chrono>

#include <fmt/format.h>

#include "deployments.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/request_fields.h"
#include "rollout_runner.h"

namespace mlswarm {

using nlohmann::json;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

/// PUT /deployments/{name}'s body: {"model_id", "version"?}.
ModelRef parse_target(const json& body) {
  if (!body.is_object()) invalid_field("", "the body must be a JSON object");
  reject_unknown_fields(body, {"model_id", "version"}, "");
  if (!body.contains("model_id") || !body["model_id"].is_string()) {
    invalid_field("model_id", "model_id (a string) is required");
  }
  ModelRef target{body["model_id"].get<std::string>(), 0};
  require_valid_id(target.model_id, "model_id");
  target.version = static_cast<int>(get_int(body, "version", "version", 0, 0, 99999999));
  return target;
}

json figures_json(const TrafficFigures& f) {
  return {{"candidate_requests", f.requests}, {"candidate_errors", f.errors}, {"candidate_p99_ms", f.p99_ms},
          {"compared", f.compared},           {"agreed", f.agreed},           {"stable_requests", f.stable_requests}};
}

}  // namespace

json ControllerApi::deployment_view(const std::string& name) const {
  auto d = rollouts_.store->find(name);
  if (!d) throw Error(ErrorCode::kNotFound, fmt::format("unknown deployment '{}'", name), "name");
  json out = to_json(*d);
  const bool live_traffic =
      d->rollout && (d->rollout->state == RolloutState::kShadow || d->rollout->state == RolloutState::kCanary);
  if (live_traffic && rollouts_.runner != nullptr) {
    const TrafficFigures f = rollouts_.runner->figures(name, rollout_phase(*d->rollout));
    out["rollout"]["phase_figures"] = figures_json(f);
    out["rollout"]["phase_gates"] = json::array();
    for (const auto& g : judge_traffic(d->rollout->spec.gates, f)) {
      out["rollout"]["phase_gates"].push_back(
          {{"gate", g.gate}, {"figure", g.figure}, {"limit", g.limit}, {"at_most", g.at_most}, {"passed", g.passed}});
    }
  }
  return out;
}

void ControllerApi::add_deployment_routes() {
  using A = Access;
  routes_.add({"GET", "/deployments", A::kRead, 0, [this](const HttpRequest&, const RouteParams&) {
                 json list = json::array();
                 for (const auto& d : rollouts_.store->list()) list.push_back(to_json(d));
                 return HttpReply::json(200, {{"deployments", std::move(list)}});
               }});
  routes_.add({"GET", "/deployments/{name}", A::kRead, 0, [this](const HttpRequest&, const RouteParams& p) {
                 require_valid_name(p[0]);
                 return HttpReply::json(200, deployment_view(p[0]));
               }});
  routes_.add(
      {"PUT", "/deployments/{name}", A::kWrite, kMaxSpecBytes, [this](const HttpRequest& r, const RouteParams& p) {
         require_valid_name(p[0]);
         if (auto leader = forwarded(r)) return *leader;
         const ModelRef target = parse_target(parse_json_body(r));
         return HttpReply::json(200, to_json(rollouts_.store->put(p[0], target, now_s())));
       }});
  routes_.add({"DELETE", "/deployments/{name}", A::kWrite, 0, [this](const HttpRequest& r, const RouteParams& p) {
                 require_valid_name(p[0]);
                 if (auto leader = forwarded(r)) return *leader;
                 rollouts_.store->remove(p[0]);
                 return HttpReply::json(200, {{"name", p[0]}, {"removed", true}});
               }});
  routes_.add({"POST", "/deployments/{name}/rollout", A::kWrite, kMaxSpecBytes,
               [this](const HttpRequest& r, const RouteParams& p) {
                 require_valid_name(p[0]);
                 if (auto leader = forwarded(r)) return *leader;
                 RolloutSpec spec = parse_rollout_spec(parse_json_body(r));
                 const Deployment d = rollouts_.store->start_rollout(p[0], std::move(spec), now_s());
                 cluster_.wake();  // its evaluation starts at the next tick
                 return HttpReply::json(202, to_json(d));
               }});
  routes_.add(
      {"DELETE", "/deployments/{name}/rollout", A::kWrite, 0, [this](const HttpRequest& r, const RouteParams& p) {
         require_valid_name(p[0]);
         if (auto leader = forwarded(r)) return *leader;
         return HttpReply::json(200, to_json(rollouts_.store->abort(p[0], now_s())));
       }});
}

}  // namespace mlswarm
