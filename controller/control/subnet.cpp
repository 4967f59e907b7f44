#include "subnet.h"

#include <charconv>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

[[noreturn]] void bad_subnet(std::string_view text, std::string_view why) {
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("SUBNET_TRAIN '{}' {}: use CIDR like 10.42.0.0/24 (prefix 16 to 32) or a "
                          "three-octet prefix like 10.42.0",
                          text, why),
              "SUBNET_TRAIN");
}

}  // namespace

Subnet parse_subnet(std::string_view text) {
  if (text.empty()) bad_subnet(text, "is not set");
  Subnet subnet;
  std::size_t slash = text.find('/');
  std::uint32_t address = 0;
  if (slash == std::string_view::npos) {
    int octets = parse_dotted_octets(text, address);
    if (octets != 3) bad_subnet(text, "is not a CIDR network or a three-octet prefix");
    subnet.network = address << 8;
    subnet.prefix = 24;
    return subnet;
  }
  if (parse_dotted_octets(text.substr(0, slash), address) != 4) bad_subnet(text, "has a malformed address");
  std::string_view prefix_text = text.substr(slash + 1);
  int prefix = -1;
  auto [p, ec] = std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), prefix);
  if (ec != std::errc() || p != prefix_text.data() + prefix_text.size() || prefix_text.empty()) {
    bad_subnet(text, "has a malformed prefix length");
  }
  if (prefix < 16 || prefix > 32) bad_subnet(text, "has a prefix length outside 16..32");
  std::uint32_t mask = prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix);
  if ((address & ~mask) != 0) bad_subnet(text, "has host bits set");
  subnet.network = address;
  subnet.prefix = prefix;
  return subnet;
}

std::vector<std::string> Subnet::hosts() const {
  std::uint64_t size = std::uint64_t{1} << (32 - prefix);
  std::vector<std::string> out;
  std::uint64_t first = size > 2 ? 1 : 0;
  std::uint64_t last = size > 2 ? size - 2 : size - 1;
  out.reserve(static_cast<std::size_t>(last - first + 1));
  for (std::uint64_t i = first; i <= last; ++i) out.push_back(format_ipv4(network + static_cast<std::uint32_t>(i)));
  return out;
}

bool Subnet::contains(std::uint32_t address) const {
  std::uint32_t mask = prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix);
  return (address & mask) == network;
}

std::string Subnet::to_string() const { return fmt::format("{}/{}", format_ipv4(network), prefix); }

}  // namespace mlswarm
