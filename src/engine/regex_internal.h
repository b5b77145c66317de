// What the two halves of the regex compiler share: the parser's tree (regex.cpp) and the
// automata built from it (regex_dfa.cpp). Not for use elsewhere.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dpa::engine::regex_detail {

constexpr uint32_t kMaxCode = 0x10ffff;
using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive code point ranges

// A node of the parsed pattern. Anchors are kept for the placement check and are no-ops after.
struct Node {
  enum Kind : uint8_t { kEmpty, kSet, kConcat, kAlt, kRepeat, kBegin, kEnd };
  Kind kind = kEmpty;
  std::size_t offset = 0;    // in the pattern, for messages
  int32_t set = -1;          // kSet: index into Tree::sets
  int64_t min = 0, max = 0;  // kRepeat; max -1: no bound
  std::vector<int32_t> kids;
};

struct Tree {
  std::vector<Node> nodes;
  std::vector<Ranges> sets;  // the code points of each class (no two equal)
  int32_t root = 0;
};

// The DFA as Regex keeps it.
struct Tables {
  std::size_t n_classes = 1;
  std::array<uint8_t, 256> class_of{};
  std::vector<int32_t> table;
  std::vector<uint8_t> accepting;
};

Tree parse(std::string_view pattern);  // throws dpa::Error
// Regex::Target::json_string: each class's characters that JSON escapes become their escapes.
void escape_for_json(Tree& tree);
Tables build(const Tree& tree);        // throws dpa::Error past a cap, or when nothing matches
// A DFA (table[state * nc + class] -> state or -1, state 0 the start) with the states from which
// no accepting state is reached removed and the classes no state tells apart merged; empty
// (no states) when the start is such a state: nothing matches.
Tables prune(std::size_t nc, const std::array<uint8_t, 256>& class_of, const std::vector<int32_t>& table,
             const std::vector<uint8_t>& accepting);

}  // namespace dpa::engine::regex_detail
