#include "subnet.h"

#include <gtest/gtest.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

TEST(Subnet, ParsesCidrAndTheSeedsPrefixForm) {
  Subnet a = parse_subnet("10.42.0.0/24");
  Subnet b = parse_subnet("10.42.0");
  EXPECT_EQ(a.network, b.network);
  EXPECT_EQ(a.prefix, 24);
  EXPECT_EQ(b.prefix, 24);
  EXPECT_EQ(a.to_string(), "10.42.0.0/24");
  auto hosts = a.hosts();
  ASSERT_EQ(hosts.size(), 254u);
  EXPECT_EQ(hosts.front(), "10.42.0.1");
  EXPECT_EQ(hosts.back(), "10.42.0.254");
}

TEST(Subnet, SmallAndLargeNetworks) {
  EXPECT_EQ(parse_subnet("127.0.0.0/30").hosts(), (std::vector<std::string>{"127.0.0.1", "127.0.0.2"}));
  EXPECT_EQ(parse_subnet("127.0.0.2/31").hosts(), (std::vector<std::string>{"127.0.0.2", "127.0.0.3"}));
  EXPECT_EQ(parse_subnet("127.0.0.9/32").hosts(), std::vector<std::string>{"127.0.0.9"});
  EXPECT_EQ(parse_subnet("10.1.0.0/16").hosts().size(), 65534u);
}

TEST(Subnet, ContainsOnlyItsOwnAddresses) {
  Subnet s = parse_subnet("192.168.7.0/24");
  std::uint32_t inside = 0, outside = 0;
  ASSERT_TRUE(parse_ipv4("192.168.7.200", inside));
  ASSERT_TRUE(parse_ipv4("192.168.8.1", outside));
  EXPECT_TRUE(s.contains(inside));
  EXPECT_FALSE(s.contains(outside));
}

TEST(Subnet, RejectsMalformedInputWithAClearMessage) {
  for (const char* bad :
       {"", "10.42", "10.42.0.0", "10.42.0.0/", "10.42.0.0/8", "10.42.0.0/33", "10.42.0.1/24", "10.42.300", "a.b.c",
        "10.42.0/24", "10.42.0.0/24x", "10..0", "10.42.0.0.0/24", "-1.2.3", " 10.42.0"}) {
    try {
      parse_subnet(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("10.42.0.0/24"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace mlswarm
