#include "mlswarm/ipv4.h"

#include <charconv>

#include <fmt/format.h>

namespace mlswarm {

int parse_dotted_octets(std::string_view text, std::uint32_t& out) {
  out = 0;
  int count = 0;
  std::size_t i = 0;
  while (true) {
    std::size_t j = text.find('.', i);
    std::string_view part = text.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i);
    if (part.empty() || part.size() > 3 || count == 4) return -1;
    unsigned value = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc() || p != part.data() + part.size() || value > 255) return -1;
    out = (out << 8) | value;
    ++count;
    if (j == std::string_view::npos) return count;
    i = j + 1;
  }
}

bool parse_ipv4(std::string_view text, std::uint32_t& out) { return parse_dotted_octets(text, out) == 4; }

std::string format_ipv4(std::uint32_t a) {
  return fmt::format("{}.{}.{}.{}", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

}  // namespace mlswarm
