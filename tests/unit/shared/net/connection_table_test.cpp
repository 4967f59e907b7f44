// Which connection HttpServer closes to make room: the table alone, no sockets.

#include <gtest/gtest.h>

#include "connection_table.h"
#include "mlswarm/http_server.h"

namespace mlswarm {
namespace {

TEST(ConnectionTable, AnAddressOverItsShareDisplacesItsOwnOldestWaitingConnection) {
  ConnectionTable table(10, 3);
  for (std::uint64_t id = 1; id <= 3; ++id) EXPECT_TRUE(table.open(id, "10.0.0.9").accepted);
  auto fourth = table.open(4, "10.0.0.9");
  ASSERT_TRUE(fourth.accepted);
  ASSERT_TRUE(fourth.evict.has_value());
  EXPECT_EQ(*fourth.evict, 1u);
  EXPECT_EQ(table.count("10.0.0.9"), 3u);
  auto other = table.open(5, "10.0.0.2");
  EXPECT_TRUE(other.accepted);
  EXPECT_FALSE(other.evict.has_value()) << "another address is not the flooder's to displace";
}

TEST(ConnectionTable, AtTheTotalTheOldestWaitingConnectionOfAnyAddressMakesRoom) {
  ConnectionTable table(4, 4);
  table.open(1, "a");
  table.open(2, "b");
  table.open(3, "c");
  table.open(4, "d");
  table.set_waiting(1, false);  // busy: a request at a worker
  auto probe = table.open(5, "e");
  ASSERT_TRUE(probe.accepted);
  EXPECT_EQ(*probe.evict, 2u) << "the oldest waiting one, never a busy one";
  EXPECT_EQ(table.size(), 4u);
}

TEST(ConnectionTable, WhenEveryConnectionIsBusyANewOneIsRefused) {
  ConnectionTable table(2, 2);
  table.open(1, "a");
  table.open(2, "a");
  table.set_waiting(1, false);
  table.set_waiting(2, false);
  auto refused = table.open(3, "b");
  EXPECT_FALSE(refused.accepted);
  EXPECT_FALSE(refused.evict.has_value());
  table.set_waiting(2, true);  // its reply went out: waiting for its next request
  auto accepted = table.open(3, "b");
  EXPECT_TRUE(accepted.accepted);
  EXPECT_EQ(*accepted.evict, 2u);
}

TEST(ConnectionTable, AConnectionWaitingAgainGoesToTheBackOfTheLine) {
  ConnectionTable table(3, 3);
  table.open(1, "a");
  table.open(2, "a");
  table.open(3, "a");
  table.set_waiting(1, false);
  table.set_waiting(1, true);  // kept alive after a reply: the newest waiting now
  EXPECT_EQ(*table.open(4, "a").evict, 2u);
  table.close(3);
  table.close(99);  // unknown: ignored
  EXPECT_EQ(table.size(), 2u);
}

TEST(HttpLimits, TheFileLimitLessAReserveBoundsConnections) {
  HttpServerOptions options;
  const HttpLimits at_1024 = settle_http_limits(options, 1024);
  EXPECT_EQ(at_1024.fd_reserve, 256u);
  EXPECT_EQ(at_1024.max_connections, 768u);
  EXPECT_EQ(at_1024.max_connections_per_address, 384u);
  const HttpLimits at_256 = settle_http_limits(options, 256);
  EXPECT_EQ(at_256.fd_reserve, 64u);
  EXPECT_EQ(at_256.max_connections, 192u);
  const HttpLimits large = settle_http_limits(options, 1 << 20);
  EXPECT_EQ(large.fd_reserve, 1024u);
  EXPECT_EQ(large.max_connections, 10'000u) << "the option bounds it below the file limit";
  options.fd_reserve = 500;
  options.max_connections_per_address = 7;
  const HttpLimits set = settle_http_limits(options, 256);
  EXPECT_EQ(set.fd_reserve, 248u) << "never the whole limit";
  EXPECT_EQ(set.max_connections, 8u);
  EXPECT_EQ(set.max_connections_per_address, 7u);
}

}  // namespace
}  // namespace mlswarm
