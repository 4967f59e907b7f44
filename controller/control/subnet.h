#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mlswarm/ipv4.h"

namespace mlswarm {

/// An IPv4 network where trainers live (SUBNET_TRAIN).
struct Subnet {
  std::uint32_t network = 0;  ///< host byte order, host bits zero
  int prefix = 24;

  /// The addresses to probe, in order: every host of the network except the network and
  /// broadcast addresses (for /31 and /32, every address).
  std::vector<std::string> hosts() const;
  bool contains(std::uint32_t address) const;
  std::string to_string() const;
};

/// Parses "10.42.0.0/24" (CIDR, prefix 16..32) or the seed's three-octet form "10.42.0"
/// (= /24). Host bits set in a CIDR are an error, so are networks larger than a /16 (a
/// scan of more than 65,534 hosts every pass is never what an operator meant).
/// Throws Error(kInvalidArgument) with a message that shows the accepted forms.
Subnet parse_subnet(std::string_view text);

}  // namespace mlswarm
