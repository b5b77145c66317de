// JSON Schema's `format` for the compiler (json_schema_compile.cpp): the names this module
// asserts, each as a regular expression over the string's JSON-escaped bytes, and their DFAs.
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/json_schema_internal.h"
#include "engine/regex.h"

namespace dpa::engine::schema_detail {
namespace {

// The names below are asserted, each as a regular expression over the string's
// JSON-escaped bytes (none of them takes a character that JSON escapes), the DFA built once per
// process. Written so that what they take, Python's datetime / uuid / ipaddress and pydantic v2
// accept (the README says where that is a subset of the RFC's text).
namespace format_re {
// Years 0001-9999 (Python's date has no year 0); months and days as the calendar has them,
// February 29 in the years divisible by 4 and not by 100, or by 400.
constexpr std::string_view kYear = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])";
constexpr std::string_view kMonthDay =
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))";
constexpr std::string_view kBy4 = "(?:0[48]|[2468][048]|[13579][26])";  // two digits, a multiple of 4 but 00
// Hours 00-23, minutes and seconds 00-59 (no leap second: Python's datetime refuses :60), 1 to 6
// fraction digits (Python and pydantic keep microseconds), offset Z or ±HH:MM.
constexpr std::string_view kTime =
    "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";
constexpr std::string_view kHex = "[0-9A-Fa-f]";
constexpr std::string_view kOctet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
constexpr std::string_view kAtext = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";

std::string date() {
  const std::string y(kYear), by4(kBy4);
  return "(?:" + y + "-" + std::string(kMonthDay) + "|(?:[0-9]{2}" + by4 + "|" + by4 + "00)-02-29)";
}
std::string ipv4() { return std::string(kOctet) + "(?:\\." + std::string(kOctet) + "){3}"; }
std::string ipv6() {  // RFC 3986's IPv6address (RFC 4291's text forms), no zone
  const std::string h16 = std::string(kHex) + "{1,4}", ls32 = "(?:" + h16 + ":" + h16 + "|" + ipv4() + ")";
  auto groups = [&](int n) { return n ? "(?:" + h16 + ":){" + std::to_string(n) + "}" : std::string(); };
  auto before = [&](int n) { return "(?:(?:" + h16 + ":){0," + std::to_string(n) + "}" + h16 + ")?"; };
  std::string r = "(?:" + groups(6) + ls32 + "|::" + groups(5) + ls32;
  for (int i = 0; i <= 4; ++i) r += "|" + before(i) + "::" + groups(4 - i) + ls32;
  return r + "|" + before(5) + "::" + h16 + "|" + before(6) + "::)";
}
std::string label() { return "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"; }  // RFC 1123
// Letter strings, either case, other than the words (lowercase): down their trie.
std::string other_than(const std::vector<std::string_view>& words, const std::string& prefix = "") {
  std::string r = "(?:";
  if (std::find(words.begin(), words.end(), prefix) == words.end()) r += "|";  // ending here
  std::string kids;
  for (std::string_view w : words)
    if (w.size() > prefix.size() && w.substr(0, prefix.size()) == prefix && kids.find(w[prefix.size()]) == std::string::npos)
      kids += w[prefix.size()];
  std::sort(kids.begin(), kids.end());
  std::string rest;
  for (char c = 'a'; c <= 'z'; ++c)
    if (kids.find(c) == std::string::npos) rest += c;
  r += "[" + rest + "][a-z]*";
  for (char c : kids) r += std::string("|") + c + other_than(words, prefix + c);
  return r + ")";
}

struct Format {
  std::string_view name;
  std::string (*regex)();
};
const Format kFormats[] = {
    {"date", [] { return date(); }},
    {"time", [] { return std::string(kTime); }},
    {"date-time", [] { return date() + "T" + std::string(kTime); }},
    {"duration",  // JSON Schema 2020-12's appendix A
     [] {
       const std::string t = "T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)";
       return "P(?:(?:[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?)(?:" + t + ")?|" + t + "|[0-9]+W)";
     }},
    {"uuid",
     [] {
       const std::string h(kHex);
       return h + "{8}-" + h + "{4}-" + h + "{4}-" + h + "{4}-" + h + "{12}";
     }},
    {"ipv4", [] { return ipv4(); }},
    {"ipv6", [] { return ipv6(); }},
    {"hostname", [] { return label() + "(?:\\." + label() + ")*"; }},
    {"uri",  // scheme ':' then one or more of RFC 3986's characters (unreserved, reserved, %XX)
     [] { return std::string("[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9._~:/?#\\[\\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+"); }},
    {"email",  // dot-atom '@' labels '.' a TLD of letters; the lengths are cut below
     [] {
       const std::string atom = std::string(kAtext) + "+", lbl = "[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*";
       return atom + "(?:\\." + atom + ")*@(?:" + lbl + "\\.)+(?i:" +
              other_than({"arpa", "invalid", "local", "localhost", "onion", "test"}) + ")";
     }},
};
}  // namespace format_re

}  // namespace

// The DFA of a `format` this module asserts, or null for any other name (an annotation).
std::shared_ptr<const Regex> format_regex(std::string_view name) {
  const format_re::Format* f = nullptr;
  for (const auto& g : format_re::kFormats)
    if (g.name == name) f = &g;
  if (!f) return nullptr;
  static std::mutex mu;
  static std::map<std::string_view, std::shared_ptr<const Regex>> built;
  std::lock_guard lock(mu);
  auto& re = built[f->name];
  if (!re) {
    auto r = Regex::compile(f->regex(), Regex::Target::json_string);
    // email: local part at most 64 characters, domain at most 63 (so every label is within 63 and
    // the address within 254, as email-validator wants), a TLD of two letters or more.
    if (name == "email")
      r = Regex::intersect(*r, *Regex::compile("[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,61}[A-Za-z]{2}",
                                               Regex::Target::json_string));
    re = std::move(r);  // kept only when built whole
  }
  return re;
}

}  // namespace dpa::engine::schema_detail
