// The sweeps' routes: POST /sweeps, GET /sweeps, GET and DELETE /sweeps/{id}.

#include "controller_api.h"

#include <fmt/format.h>

#include "mlswarm/error.h"
#include "mlswarm/folder_dataset.h"
#include "mlswarm/ids.h"
#include "rollout.h"
#include "searcher.h"

namespace mlswarm {

using nlohmann::json;

void ControllerApi::add_sweep_routes() {
  using A = Access;
  routes_.add({"GET", "/sweeps", A::kRead, 0, [this](const HttpRequest&, const RouteParams&) {
                 return HttpReply::json(200, {{"sweeps", sweeps_->list()}});
               }});
  routes_.add({"GET", "/sweeps/{id}", A::kRead, 0, [this](const HttpRequest&, const RouteParams& p) {
                 require_valid_id(p[0], "sweep_id");
                 auto sweep = sweeps_->find(p[0]);
                 if (!sweep) throw Error(ErrorCode::kNotFound, fmt::format("unknown sweep '{}'", p[0]), "sweep_id");
                 return HttpReply::json(200, *sweep);
               }});
  routes_.add({"DELETE", "/sweeps/{id}", A::kWrite, 0, [this](const HttpRequest& r, const RouteParams& p) {
                 require_valid_id(p[0], "sweep_id");
                 if (auto leader = forwarded(r)) return *leader;
                 return HttpReply::json(200, sweeps_->cancel(p[0]));
               }});
  routes_.add({"POST", "/sweeps", A::kWrite, kMaxSpecBytes, [this](const HttpRequest& r, const RouteParams&) {
                 if (auto leader = forwarded(r)) return *leader;
                 const SweepSpec spec = parse_sweep_spec(parse_json_body(r));
                 if (spec.base.contains("dataset") && spec.base["dataset"].is_string()) {
                   require_dataset(spec.base["dataset"].get<std::string>(), options_.home_dir);
                 }
                 if (!spec.deploy.is_null()) deploy_rollout_spec(spec.deploy, spec.sweep_id);
                 json sweep = sweeps_->create(spec);
                 cluster_.wake();  // its first trials start now, not at the next tick
                 return HttpReply::json(202, sweep);
               }});
}

}  // namespace mlswarm
