#include "mlswarm/routes.h"

#include <gtest/gtest.h>

namespace mlswarm {
namespace {

RouteTable table() {
  RouteTable t;
  auto ok = [](const HttpRequest&, const RouteParams&) { return HttpReply::json(200, {}); };
  t.add({"GET", "/jobs", Access::kRead, 0, ok});
  t.add({"GET", "/jobs/{id}", Access::kRead, 0, ok});
  t.add({"DELETE", "/jobs/{id}", Access::kWrite, 0, ok});
  t.add({"GET", "/datasets/{id}/examples", Access::kRead, 0, ok});
  t.add({"POST", "/predict", Access::kWrite, 1000, ok});
  return t;
}

TEST(RouteTable, MatchesShapesAndCapturesPlaceholders) {
  RouteTable t = table();
  auto m = t.match("GET", "/jobs/job-123");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/jobs/{id}");
  EXPECT_EQ(m.params, RouteParams{"job-123"});
  EXPECT_NE(t.match("HEAD", "/jobs").route, nullptr) << "GET routes answer HEAD";
  m = t.match("PUT", "/jobs/j");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_EQ(m.allow, "GET, DELETE");
  m = t.match("GET", "/jobs/j/extra");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_TRUE(m.allow.empty()) << "no such path: 404, not 405";
}

TEST(RouteTable, LabelsAreBoundedByTheRoutes) {
  RouteTable t = table();
  EXPECT_EQ(t.label("/jobs/job-123"), "/jobs/{id}");
  EXPECT_EQ(t.label("/datasets/mnist/examples"), "/datasets/{id}/examples");
  EXPECT_EQ(t.label("/predict"), "/predict");
  EXPECT_EQ(t.label("/wp-admin/x"), "other");
  EXPECT_EQ(t.label("/"), "other");
  EXPECT_EQ(t.label("/jobs/x/unique-123"), "other") << "a known prefix with more segments is not that route";
  EXPECT_EQ(t.label("/datasets/x/y"), "other");
}

TEST(RouteTable, NoRouteIsA404OrA405WithAllow) {
  RouteTable t = table();
  HttpRequest r;
  r.method = "PATCH";
  r.path = "/jobs/j";
  HttpReply reply = RouteTable::no_route(r, t.match(r.method, r.path));
  EXPECT_EQ(reply.status, 405);
  EXPECT_EQ(reply.headers["Allow"], "GET, DELETE");
  r.path = "/nope";
  EXPECT_EQ(RouteTable::no_route(r, t.match(r.method, r.path)).status, 404);
}

TEST(RouteTable, BodyCapsCountTheAnnouncedLengthAndTheBodyRead) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/predict";
  EXPECT_NO_THROW(require_body_within(r, 10));
  r.headers["content-length"] = "11";
  EXPECT_THROW(require_body_within(r, 10), Error);
  r.headers["content-length"] = "99999999999999999999999";
  EXPECT_THROW(require_body_within(r, 10), Error) << "an absurd length is too large, not a wrap-around";
  r.headers.clear();
  r.body = std::string(11, 'x');
  EXPECT_THROW(require_body_within(r, 10), Error) << "a chunked body announced nothing";
  try {
    require_body_within(r, 10);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kPayloadTooLarge);
  }
}

}  // namespace
}  // namespace mlswarm
