#pragma once

// Dotted IPv4 addresses: the one parser (discovery, SUBNET_TRAIN, placements, proofs).

#include <cstdint>
#include <string>
#include <string_view>

namespace mlswarm {

/// Parses one to four dot-separated decimal octets ("10.42.0" or "10.42.0.7") into `out`
/// (host byte order, the octets read shifted in from the right). Returns how many octets were
/// read, or -1 when `text` is not that (an empty part, a part over 255 or not all digits, more
/// than four parts).
int parse_dotted_octets(std::string_view text, std::uint32_t& out);

/// Parses a dotted IPv4 address ("a.b.c.d") into host byte order; false if it is not one.
bool parse_ipv4(std::string_view text, std::uint32_t& out);

/// "a.b.c.d" of an address in host byte order.
std::string format_ipv4(std::uint32_t address);

}  // namespace mlswarm
