// The recognizer of json_schema.h (the compiler is json_schema_compile.cpp).
//
// The recognizer keeps one parse per way the text so far can be read (a stack of open containers
// and the lexical state of the innermost value). Parses split where a value starts and several
// branches of its schema take the first byte (anyOf, a type list, enum values); an object key is
// matched against the declared names and as an undeclared key in one parse, since the key is
// known once its closing quote comes. After each byte the parses that refused it end and equal
// ones merge. Each parse on its own never reaches a dead end (a container or key is begun only if
// something conforming fits in it within the depth limit, a digit only if some completion lies
// within the bounds and is a multiple of multipleOf's, an item of a uniqueItems array only if some completion is a value no earlier
// item had), so dropping parses past kMaxAlternatives loses some texts but never leaves the
// recognizer stuck; refusing the byte instead could, when it is the only way on. A uniqueItems
// array keeps its items' value hashes as frames above its own, as an object keeps its undeclared
// keys' hashes.
#include "engine/json_schema.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "engine/json_schema_internal.h"
#include "engine/regex.h"

namespace dpa::engine {
namespace {

using namespace schema_detail;

enum Phase : uint8_t {
  kValue,       // before a value of `node` (the text's start too): whitespace or its first byte
  kObjFirst,    // after '{': whitespace, a key or '}'
  kObjKey,      // after ',' in an object: whitespace or a key
  kColon,       // after a key (`node` is its value's schema): whitespace or ':'
  kArrFirst,    // after '[': whitespace, an item or ']'
  kAfterValue,  // after a value in a container: whitespace, ',' or the closer
  kString,      // in a string (a key when flags has kKey)
  kEscape,      // after '\'
  kUnicode,     // in \uXXXX, hex_left digits to go
  kNumMinus, kNumZero, kNumInt, kNumDot, kNumFrac, kNumE, kNumEsign, kNumExp,  // as JsonPrefix's
  kLiteral,     // in true / false / null
  kChoice,      // in an enum value: candidates [lo, hi) of its texts, `at` bytes matched
  kDone,        // the top-level value is whole
};
enum Kind : uint8_t { kObjFrame, kArrFrame, kKeyFrame, kItemFrame };
// kItem: the value is an item of a uniqueItems array, its hash kept in Top's v* fields (of a
// number: kSig once a nonzero digit came, kExpNeg for a negative exponent).
enum Flag : uint8_t { kKey = 1, kLowNeeded = 2, kNeg = 4, kItem = 8, kSig = 16, kExpNeg = 32 };
constexpr uint64_t kFnvBasis = 14695981039346656037ull, kFnvPrime = 1099511628211ull;

// A UTF-8 lead byte (RFC 3629: no overlong forms, surrogates or values past U+10FFFF): sets the
// continuation bytes to go and the next one's range; false for a byte that cannot lead.
template <typename Top>
bool utf8_lead(Top& t, uint8_t c) {
  if (c >= 0xc2 && c <= 0xdf) t.utf8_left = 1;
  else if (c == 0xe0) t.utf8_left = 2, t.utf8_lo = 0xa0;
  else if (c == 0xed) t.utf8_left = 2, t.utf8_hi = 0x9f;
  else if (c >= 0xe1 && c <= 0xef) t.utf8_left = 2;
  else if (c == 0xf0) t.utf8_left = 3, t.utf8_lo = 0x90;
  else if (c >= 0xf1 && c <= 0xf3) t.utf8_left = 3;
  else if (c == 0xf4) t.utf8_left = 3, t.utf8_hi = 0x8f;
  else return false;
  return true;
}
template <typename Top>
bool utf8_continuation(Top& t, uint8_t c) {
  if (c < t.utf8_lo || c > t.utf8_hi) return false;
  --t.utf8_left, t.utf8_lo = 0x80, t.utf8_hi = 0xbf;
  return true;
}

// Narrows the sorted texts [lo, hi), which share their first `at` bytes, to those whose next byte
// is c (a run, as in ChoicePrefix).
void narrow(const std::vector<std::string>& texts, uint32_t& lo, uint32_t& hi, uint32_t at, uint8_t c) {
  auto next = [&](uint32_t i) { return texts[i].size() > at ? static_cast<int>(static_cast<uint8_t>(texts[i][at])) : -1; };
  while (lo < hi && next(lo) < c) ++lo;
  uint32_t end = lo;
  while (end < hi && next(end) == c) ++end;
  hi = end;
}

}  // namespace

SchemaPrefix::SchemaPrefix(const JsonSchema& schema) : schema_(&schema) {
  Top t;
  t.node = schema.root_;
  t.phase = kValue;
  st_.tops.push_back(t);
}

namespace {

// The innermost container of the parse whose frames end `frames` (the one being stepped):
// undeclared keys' hashes sit above their object, items' hashes above their array.
template <typename Frames>
std::size_t container(const Frames& frames) {
  std::size_t i = frames.size();
  while (frames[i - 1].kind == kKeyFrame || frames[i - 1].kind == kItemFrame) --i;
  return i - 1;
}

void end_value(uint8_t depth, uint8_t& phase) { phase = depth == 0 ? kDone : kAfterValue; }

// Whether some integer with `neg` sign whose digits begin with those of m (m > 0; 0: any
// nonzero one) lies in [lo, hi] and is a multiple of mod: for each count of digits to come, the
// first multiple in the run they reach.
bool int_viable(int64_t lo, int64_t hi, bool neg, uint64_t m, uint64_t mod) {
  const i128 tlo = neg ? std::max<i128>(-i128{hi}, 1) : std::max<i128>(lo, 1);
  const i128 thi = neg ? -i128{lo} : i128{hi};
  const auto im = static_cast<i128>(mod);
  auto meets = [&](i128 a, i128 b) {  // some multiple in [a, b] ∩ [tlo, thi] (a >= 1)
    a = std::max(a, tlo), b = std::min(b, thi);
    return a <= b && (a + im - 1) / im * im <= b;
  };
  if (m == 0) return meets(tlo, thi);
  for (i128 a = m, p = 1; a <= thi; a *= 10, p *= 10)
    if (meets(a, a + p - 1)) return true;
  return false;
}
bool int_in(int64_t lo, int64_t hi, bool neg, uint64_t m, uint64_t mod) {
  const i128 v = neg ? -i128{m} : i128{m};
  return v >= lo && v <= hi && m % mod == 0;
}
// An item of a uniqueItems array under integer bounds: whether some integer in [lo, hi] that the
// digits so far (m > 0 of them, or none: every one of the sign) lead to is not among the n
// values `used` (hashes). Past n of them counted some is not; else each is looked up.
template <typename Used>
bool int_fresh(int64_t lo, int64_t hi, uint64_t mod, bool neg, bool any, uint64_t m, std::size_t n, const Used& used) {
  const i128 tlo = neg ? std::max<i128>(-i128{hi}, 1) : std::max<i128>(lo, 1);
  const i128 thi = neg ? -i128{lo} : i128{hi};
  struct Run {
    i128 a, b;
  };
  Run runs[21];  // the multiples of mod they reach: from a to b, a step of mod
  int n_runs = 0;
  i128 count = 0;
  const auto im = static_cast<i128>(mod);
  auto run = [&](i128 x, i128 y) {
    x = std::max(x, tlo), y = std::min(y, thi);
    x = (x + im - 1) / im * im, y = y / im * im;  // x, y >= 1
    if (x <= y) runs[n_runs++] = {x, y}, count += (y - x) / im + 1;
  };
  if (any) {
    run(tlo, thi);
  } else {
    for (i128 a = m, p = 1; a <= thi; a *= 10, p *= 10) run(a, a + p - 1);
  }
  if (count > static_cast<i128>(n)) return true;
  for (int r = 0; r < n_runs; ++r)
    for (i128 v = runs[r].a; v <= runs[r].b; v += im)
      if (!used(value_hash::int_hash(neg ? -v : v))) return true;
  return false;
}

// Numbers under bounds (NumberBounds, json_schema_internal.h): the magnitude's digits, as they
// come, against the least and greatest magnitude of the number's sign. Exponents are not taken
// (a restriction: every value in range is still written in plain decimal), so a digit's place is
// known once the point comes, and the state is small:
//   - in the integer part (kNumZero: no digit counted; kNumInt) `at` counts its k digits, and
//     lo / hi hold them against the bound's first k digits (kSame while those match; past the
//     bound's integer digits they stay as they were);
//   - from the point on (kNumDot, kNumFrac) `at` counts the n fraction digits, and lo / hi hold
//     the value v read so far against the bound cut to n fraction digits.
// A byte is taken iff the values its completions reach meet the side's range: v's completions
// reach [v, v + 10^-n) (after "0": [0, 1); after "12.": [12, 13), a digit being due), an integer
// part P's reach [P·10^j, (P+1)·10^j) for each j more integer digits.
enum Cmp : uint32_t { kBelow, kSame, kAbove };
constexpr uint32_t kMaxCount = UINT32_MAX;  // `at` stays here: past every bound's digits

uint32_t cmp(int a, int b) { return a < b ? kBelow : a > b ? kAbove : kSame; }
// The integer part's k-th digit (0-based) d: its digits so far, c, against the bound's.
uint32_t int_digit(const Magnitude& b, uint32_t k, uint32_t c, int d) {
  return c != kSame || k >= b.ints ? c : cmp(d, b.digit(k));
}
// The integer part of k digits, c, at the point: the value against the bound cut to 0 fraction digits.
uint32_t int_value(const Magnitude& b, uint32_t k, uint32_t c) { return k < b.ints ? kBelow : k > b.ints ? kAbove : c; }
// The n-th fraction digit (0-based) d: s, v against the bound cut to n digits, for n + 1.
uint32_t frac_digit(const Magnitude& b, uint32_t n, uint32_t s, int d) {
  return s != kSame ? s : cmp(d, b.digit(uint64_t{b.ints} + n));
}
// v itself (n fraction digits, s) against the bound: below it where they agree so far but the
// bound has more fraction digits.
uint32_t value_cmp(const Magnitude& b, uint32_t n, uint32_t s) { return s == kSame && b.frac() > n ? kBelow : s; }

bool within(const NumberBounds::Side& side, uint32_t n, uint32_t lo, uint32_t hi) {  // v in range
  const uint32_t a = value_cmp(side.lo, n, lo);
  if (!(a == kAbove || (a == kSame && !side.lo.exclusive))) return false;
  if (side.hi.none) return true;
  const uint32_t b = value_cmp(side.hi, n, hi);
  return b == kBelow || (b == kSame && !side.hi.exclusive);
}
// [v, v + 10^-n) meets the range iff v is at most the greatest (below it, if exclusive) and
// v + 10^-n passes the least, that is v is at least the least cut to n digits; exclusive or not,
// values just under v + 10^-n are reached.
// below_hi: as if the greatest were excluded (is something besides it within reach?).
bool frac_viable(const NumberBounds::Side& side, uint32_t n, uint32_t lo, uint32_t hi, bool below_hi = false) {
  if (lo == kBelow) return false;
  if (side.hi.none) return true;
  const uint32_t b = value_cmp(side.hi, n, hi);
  return b == kBelow || (b == kSame && !side.hi.exclusive && !below_hi);
}
// The integer part P of k >= 1 digits: some [P·10^j, (P+1)·10^j) meets the range. Both ends grow
// with j, so the largest j with P·10^j within the greatest decides.
bool int_viable(const NumberBounds::Side& side, uint32_t k, uint32_t lo, uint32_t hi, bool below_hi = false) {
  if (side.hi.none) return true;  // enough digits pass any least
  const Magnitude &l = side.lo, &g = side.hi;
  if (k > g.ints) return false;
  int64_t top = g.ints;  // k + j: the integer digits of P·10^j
  // P·10^(ints-k) against the greatest: above it, or equal to it (the greatest's digits past P's
  // being zeros) where that is excluded, leaves a digit fewer.
  if (hi == kAbove || (hi == kSame && (g.exclusive || below_hi) && g.end() <= k)) --top;
  if (top < k) return false;
  // (P+1)·10^j passes the least iff the least has fewer integer digits, or as many and its first
  // k are at most P.
  return l.ints != top ? l.ints < top : lo != kBelow;
}

bool enum_viable(const std::vector<uint8_t>& depth, uint32_t lo, uint32_t hi, uint8_t open) {
  for (uint32_t i = lo; i < hi; ++i)
    if (std::size_t{open} + depth[i] <= SchemaPrefix::kMaxDepth) return true;
  return false;
}

// A digit of a number under bounds (see Cmp): steps t (phase, at, lo, hi) and says whether some
// completion is within the side. kNumMinus stands for "the first digit is due", sign or not.
template <typename Top>
bool decimal_digit(const NumberBounds::Side& side, Top& t, uint8_t c) {
  const int d = c - '0';
  switch (t.phase) {
    case kNumMinus:
      if (!side.open) return false;
      t.at = 0, t.lo = t.hi = kSame;
      if (d == 0) {
        t.phase = kNumZero;
        return frac_viable(side, 0, int_value(side.lo, 0, kSame), int_value(side.hi, 0, kSame));
      }
      t.phase = kNumInt;
      [[fallthrough]];
    case kNumInt:
      t.lo = int_digit(side.lo, t.at, t.lo, d), t.hi = int_digit(side.hi, t.at, t.hi, d);
      t.at += t.at < kMaxCount;
      return int_viable(side, t.at, t.lo, t.hi);
    default:  // kNumDot, kNumFrac
      t.lo = frac_digit(side.lo, t.at, t.lo, d), t.hi = frac_digit(side.hi, t.at, t.hi, d);
      t.at += t.at < kMaxCount;
      t.phase = kNumFrac;
      return frac_viable(side, t.at, t.lo, t.hi);
  }
}
template <typename Top>
bool decimal_point(const NumberBounds::Side& side, Top& t) {  // '.' after kNumZero or kNumInt
  t.lo = int_value(side.lo, t.at, t.lo), t.hi = int_value(side.hi, t.at, t.hi), t.at = 0;
  t.phase = kNumDot;
  return frac_viable(side, 0, t.lo, t.hi);
}
// Whether the completions of t (a number under bounds, past its first byte) reach a magnitude
// within the side below its greatest: where they reach the side (decimal_digit said so) but not
// that, the greatest is the one value they reach.
template <typename Top>
bool decimal_below_hi(const NumberBounds::Side& side, const Top& t) {
  switch (t.phase) {
    case kNumMinus: return side.open && !side.point;
    case kNumZero: return frac_viable(side, 0, int_value(side.lo, 0, t.lo), int_value(side.hi, 0, t.hi), true);
    case kNumInt: return int_viable(side, t.at, t.lo, t.hi, true);
    default: return frac_viable(side, t.phase == kNumDot ? 0 : t.at, t.lo, t.hi, true);  // kNumDot, kNumFrac
  }
}
template <typename Top>
bool decimal_within(const NumberBounds::Side& side, const Top& t) {  // the number may end here
  if (t.phase == kNumZero || t.phase == kNumInt) return within(side, 0, int_value(side.lo, t.at, t.lo), int_value(side.hi, t.at, t.hi));
  return t.phase == kNumFrac && within(side, t.at, t.lo, t.hi);
}

// Numbers under multipleOf q = p·10^-k (p < 2^31): x conforms iff it has no nonzero digit past
// the k-th fraction digit and x·10^k ≡ 0 (mod p). Top's num holds the digits read so far, up to
// the k-th fraction digit, as an integer mod p; `at` counts the fraction digits. The integer
// digits always reach a multiple (more of them, or fraction digits, span more than q); from the
// point on, with n fraction digits read and remainder r, the e = k - n digits still significant
// reach one iff r·10^e + G ≡ 0 for some G < 10^e.
uint64_t pow10_mod(uint64_t e, uint64_t p) {
  uint64_t r = 1 % p, b = 10 % p;
  for (; e; e >>= 1, b = b * b % p)
    if (e & 1) r = r * b % p;
  return r;
}
bool mult_reach(uint64_t r, uint64_t e, uint64_t p) {
  if (e >= 10) return true;  // 10^e > p: every remainder
  uint64_t t = 1;
  for (uint64_t i = 0; i < e; ++i) t *= 10;
  return (p - r * t % p) % p < t;
}
// Byte c, taken in phase `before` (bounds: NumberBounds' functions counted `at`).
template <typename Top>
bool mult_byte(uint64_t p, uint64_t k, bool bounds, Top& t, uint8_t before, uint8_t c) {
  if (c == '.') {
    if (!bounds) t.at = 0;
    return mult_reach(t.num, k, p);
  }
  if (!is_digit(c)) return true;
  const uint64_t d = c - '0';
  if (before == kNumDot || before == kNumFrac) {
    if (!bounds) t.at += t.at < kMaxCount;
    if (t.at > k) return d == 0;
    t.num = (t.num * 10 + d) % p;
    return mult_reach(t.num, k - t.at, p);
  }
  t.num = ((before == kNumMinus ? 0 : t.num) * 10 + d) % p;  // after '-', num is number_byte's
  return true;
}
template <typename Top>
bool mult_complete(uint64_t p, uint64_t k, const Top& t) {  // the number may end here
  if (t.phase == kNumZero || t.phase == kNumInt) return t.num * pow10_mod(k, p) % p == 0;
  if (t.phase != kNumFrac) return false;
  return t.at >= k ? t.num == 0 : t.num * pow10_mod(k - t.at, p) % p == 0;
}

// An item's number: its hash (Top's v* fields) after byte c, taken in phase `before`.
template <typename Top>
void hash_number_byte(Top& t, uint8_t before, uint8_t c) {
  if (c == '-' && before == kNumE) t.flags |= kExpNeg;
  if (!is_digit(c)) return;
  const int d = c - '0';
  if (before == kNumE || before == kNumEsign || before == kNumExp) {
    t.vexp = t.vexp * 10 + static_cast<uint64_t>(d);  // mod 2^64, as the point
    return;
  }
  const bool frac = before == kNumDot || before == kNumFrac;
  if (!(t.flags & kSig)) {
    if (d == 0) {  // a leading zero: "0" itself, or one after the point that moves the point
      if (frac) --t.vpoint;
      return;
    }
    t.flags |= kSig;
    t.vh = t.vall = static_cast<uint64_t>(d);
  } else {
    t.vall = value_hash::digit(t.vall, d);
    if (d) t.vh = t.vall;  // trailing zeros are not the sig's until a nonzero digit follows
  }
  if (!frac) ++t.vpoint;
}

}  // namespace

// A scalar value has ended. An item of a uniqueItems array is refused where an item before it
// had the same value, else its hash is kept above the array's frame.
bool SchemaPrefix::value_ended(Top& t, Out& out) const {
  if (t.flags & kItem) {
    uint64_t h = 0;
    switch (t.phase) {
      case kString: h = value_hash::string_hash(t.vh); break;
      case kLiteral: h = value_hash::literal_hash(t.lit); break;
      case kChoice: h = schema_->nodes_[t.node].enum_hash[t.lo]; break;
      default:  // a number
        h = !(t.flags & kSig) ? value_hash::zero_hash()
                              : value_hash::number_hash(t.flags & kNeg, t.vh, t.vpoint + ((t.flags & kExpNeg) ? 0 - t.vexp : t.vexp));
    }
    for (std::size_t i = out.frames.size(); out.frames[i - 1].kind == kItemFrame; --i)
      if (out.frames[i - 1].word == h) return false;
    Frame f;
    f.kind = kItemFrame, f.word = h;
    out.frames.push_back(f);
    t.flags &= static_cast<uint8_t>(~(kItem | kSig | kExpNeg));
    t.vh = t.vall = t.vpoint = t.vexp = 0;
  }
  end_value(t.depth, t.phase);
  return true;
}

// An item of a uniqueItems array, past its first byte or more: whether some way to complete it
// is a value no earlier item had (the items' hashes are the frames above the array's, which ends
// the parse's `n` frames). Every item's value is a scalar (the compiler saw to it).
bool SchemaPrefix::item_viable(const Top& t, const Frame* frames, std::size_t n) const {
  std::size_t first = n;
  while (first > 0 && frames[first - 1].kind == kItemFrame) --first;
  const Frame* items = frames + first;
  const std::size_t n_used = n - first;
  auto used = [&](uint64_t h) {
    for (std::size_t i = 0; i < n_used; ++i)
      if (items[i].word == h) return true;
    return false;
  };
  const JsonSchema::Node& l = schema_->nodes_[t.node];
  switch (t.phase) {
    case kLiteral: return !used(value_hash::literal_hash(t.lit));
    case kChoice:
      for (uint32_t i = t.lo; i < t.hi; ++i)
        if (std::size_t{t.depth} + l.enum_depth[i] <= kMaxDepth && !used(l.enum_hash[i])) return true;
      return false;
    case kString:
    case kEscape:
    case kUnicode: {
      // Room for one more character: more strings than items (kMaxUniqueItems). Else the last
      // character is under way or done, and the ways to end it are counted where they are few.
      static_assert(kMaxUniqueItems <= 256);
      if (l.max_length == UINT64_MAX || t.at < l.max_length) return true;
      const bool low = t.flags & kLowNeeded;
      if (t.phase == kString && t.utf8_left == 0 && !low) return !used(value_hash::string_hash(t.vh));
      if (t.phase == kString && t.utf8_left == 1) {  // its last byte due: 64 ways
        for (int b = t.utf8_lo; b <= t.utf8_hi; ++b)
          if (!used(value_hash::string_hash(value_hash::fnv(t.vh, static_cast<uint8_t>(b))))) return true;
        return false;
      }
      if (t.phase == kUnicode && t.hex_left == 1) {  // \uXXX: its last digit due, 16 ways
        if (!low && t.hex_value >= 0xd80 && t.hex_value <= 0xdbf) return true;  // a high surrogate: 1,024 low halves to come
        for (uint32_t h = 0; h < 16; ++h) {
          uint32_t cp = uint32_t{t.hex_value} * 16 + h;
          if (low) cp = 0x10000 + ((static_cast<uint32_t>(t.vpoint) - 0xd800) << 10) + (cp - 0xdc00);
          if (!used(value_hash::string_hash(value_hash::fnv_code_point(t.vh, cp)))) return true;
        }
        return false;
      }
      return true;  // 256 ways or more
    }
    default: {  // a number
      const bool neg = t.flags & kNeg;
      if (l.numbers) {
        // Between the bounds the values are as many as the decimals, but for a range of one
        // value, or a prefix that reaches the greatest only (maximum 1: "1", "1.0").
        const NumberBounds::Side& side = l.numbers->side[neg];
        return side.hi.none || decimal_below_hi(side, t) || !used(side.hi_hash);
      }
      if (l.bounded && !(l.types & kNumber)) {
        if (t.phase == kNumZero) return !used(value_hash::zero_hash());
        return int_fresh(l.lo, l.hi, l.int_mod, neg, t.phase == kNumMinus, t.num, n_used, used);
      }
      // Unbounded: only 0 cannot be told from other values by more digits ("0" or "-0" of an
      // integer, "0e", "0.0E+1" of a number).
      const bool zero = !(l.types & kNumber) ? t.phase == kNumZero
                                             : (t.phase == kNumE || t.phase == kNumEsign || t.phase == kNumExp) && !(t.flags & kSig);
      return !zero || !used(value_hash::zero_hash());
    }
  }
}

SchemaPrefix::Did SchemaPrefix::item_checked(Did d, const Top& t, std::size_t base, const Out& out) const {
  if (d != Did::keep || !(t.flags & kItem)) return d;
  return item_viable(t, &out.frames[base], out.frames.size() - base) ? Did::keep : Did::drop;
}

bool SchemaPrefix::extra_ok(const Top& t, const Frame& obj) const {
  const auto& nodes = schema_->nodes_;
  return obj.n_extra < kMaxExtraKeys && std::size_t{t.depth} + nodes[nodes[obj.node].additional].min_depth <= kMaxDepth;
}

bool SchemaPrefix::declared_viable(const Top& t, const Frame& obj, uint32_t lo, uint32_t hi) const {
  const auto& nodes = schema_->nodes_;
  const JsonSchema::Node& n = nodes[obj.node];
  for (uint32_t i = lo; i < hi; ++i)
    if (!((obj.word >> i) & 1) && std::size_t{t.depth} + nodes[n.props[i]].min_depth <= kMaxDepth) return true;
  return false;
}

bool SchemaPrefix::key_possible(const Top& t, std::size_t obj, const Out& out) const {
  const Frame& f = out.frames[obj];
  return extra_ok(t, f) || declared_viable(t, f, 0, static_cast<uint32_t>(schema_->nodes_[f.node].names.size()));
}

SchemaPrefix::Did SchemaPrefix::close_container(Top& t, Out& out) const {
  out.frames.resize(container(out.frames));
  --t.depth;
  end_value(t.depth, t.phase);
  return Did::keep;
}

SchemaPrefix::Did SchemaPrefix::value_start(Top& t, std::size_t base, uint8_t c, Out& out) const {
  const auto& nodes = schema_->nodes_;
  const std::size_t n_base = out.frames.size() - base;
  // An item of a uniqueItems array (a scalar): begun only where a value no earlier item had can
  // come of it.
  bool item = false;
  if (t.depth > 0) {
    const Frame& f = out.frames[container(out.frames)];
    item = f.kind == kArrFrame && nodes[f.node].unique;
  }
  int emitted = 0;
  // Each successor but the first gets its own copy of the parse's frames.
  auto emit = [&](Top s, const Frame* push) {
    if (item && !item_viable(s, &out.frames[base], n_base)) return;
    std::size_t b = base;
    if (emitted++) {
      b = out.frames.size();
      out.frames.append_own(base, n_base);
    }
    if (push) out.frames.push_back(*push), ++s.depth;
    s.n_frames = static_cast<uint16_t>(out.frames.size() - b);
    out.tops.push_back(s);
  };
  for (uint32_t leaf : nodes[t.node].leaves) {
    const JsonSchema::Node& l = nodes[leaf];
    Top s = t;
    s.node = leaf, s.flags = item ? kItem : 0, s.re = 0;
    if (l.is_enum) {
      uint32_t lo = 0, hi = static_cast<uint32_t>(l.enum_text.size());
      narrow(l.enum_text, lo, hi, 0, c);
      if (!enum_viable(l.enum_depth, lo, hi, t.depth)) continue;
      s.phase = kChoice, s.lo = lo, s.hi = hi, s.at = 1;
      emit(s, nullptr);
      continue;
    }
    const bool bounded = l.bounded && !(l.types & kNumber);
    Frame f;
    f.node = leaf;
    switch (c) {
      case '{':
        if (!(l.types & kObject) || std::size_t{t.depth} + l.min_depth_object > kMaxDepth) break;
        f.kind = kObjFrame, s.phase = kObjFirst;
        emit(s, &f);
        break;
      case '[':
        if (!(l.types & kArray) || std::size_t{t.depth} + l.min_depth_array > kMaxDepth) break;
        f.kind = kArrFrame, s.phase = kArrFirst;
        emit(s, &f);
        break;
      case '"':
        if (!(l.types & kStr)) break;
        s.phase = kString, s.at = 0;  // s.re: Regex::start()
        if (item) s.vh = value_hash::kFnvBasis;
        emit(s, nullptr);
        break;
      case 't':
      case 'f':
      case 'n':
        if (!(l.types & (c == 'n' ? kNull : kBool))) break;
        s.phase = kLiteral, s.lit = c == 't' ? 0 : c == 'f' ? 1 : 2, s.lit_at = 1;
        emit(s, nullptr);
        break;
      default:
        if (!(l.types & kInteger) || !(c == '-' || is_digit(c))) break;
        s.num = 0;
        if (l.numbers) {  // bounds on numbers (see Cmp)
          s.phase = kNumMinus;
          if (c == '-' ? !l.numbers->side[1].open : !decimal_digit(l.numbers->side[0], s, c)) break;
          if (c == '-') s.flags |= kNeg;
        } else if (c == '-') {
          if (bounded && !int_viable(l.lo, l.hi, true, 0, l.int_mod)) break;  // no "-0" under bounds: a negative must fit
          s.phase = kNumMinus, s.flags |= kNeg;
        } else if (c == '0') {
          if (bounded && !int_in(l.lo, l.hi, false, 0, l.int_mod)) break;
          s.phase = kNumZero;
        } else {
          if (bounded && !int_viable(l.lo, l.hi, false, c - '0', l.int_mod)) break;
          s.phase = kNumInt, s.num = c - '0';
        }
        if (l.mult_p) s.num = is_digit(c) ? (c - '0') % l.mult_p : 0;  // multipleOf's remainder (mult_byte)
        if (item) hash_number_byte(s, kValue, c);
        emit(s, nullptr);
    }
  }
  return emitted ? Did::emitted : Did::drop;
}

SchemaPrefix::Did SchemaPrefix::value_string_byte(Top& t, uint8_t c, Out& out) const {
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  const bool item = t.flags & kItem;  // the decoded bytes hashed as they come (value_hash)
  if (n.pattern) {
    // The DFA reads the string's bytes as written (escapes included, in their canonical form):
    // a '"' in kString closes the string (one inside it comes escaped), where the DFA accepts.
    if (t.phase == kString && t.utf8_left == 0 && c == '"') {
      if (!n.pattern->accepting(t.re)) return Did::drop;
      t.re = 0;  // no longer read: parses that differ in it alone may merge
    } else {
      const int32_t next = n.pattern->next(t.re, c);
      if (next < 0) return Did::drop;
      t.re = next;  // and the JSON lexer below, which takes every byte the DFA does
    }
  }
  switch (t.phase) {
    case kString:
      if (t.utf8_left) {
        if (!utf8_continuation(t, c)) return Did::drop;
        if (item) t.vh = value_hash::fnv(t.vh, c);
        return Did::keep;
      }
      if (t.flags & kLowNeeded) {  // after a high surrogate's escape only its low half's escape may come
        if (c != '\\') return Did::drop;
        t.phase = kEscape;
        return Did::keep;
      }
      if (c == '"') {
        if (t.at < n.min_length) return Did::drop;
        return value_ended(t, out) ? Did::keep : Did::drop;
      }
      if (c < 0x20 || t.at >= n.max_length) return Did::drop;  // control characters must be escaped
      ++t.at;  // a character begins (an escape is one)
      if (c == '\\') {
        t.phase = kEscape;
        return Did::keep;
      }
      if (c >= 0x80 && !utf8_lead(t, c)) return Did::drop;
      if (item) t.vh = value_hash::fnv(t.vh, c);
      return Did::keep;
    case kEscape:
      if (t.flags & kLowNeeded) {
        if (c != 'u') return Did::drop;
      } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
        t.phase = kString;
        if (item) {
          const uint8_t b = c == 'b' ? 0x08 : c == 'f' ? 0x0c : c == 'n' ? 0x0a : c == 'r' ? 0x0d : c == 't' ? 0x09 : c;
          t.vh = value_hash::fnv(t.vh, b);
        }
        return Did::keep;
      } else if (c != 'u') {
        return Did::drop;
      }
      t.phase = kUnicode, t.hex_left = 4, t.hex_value = 0;
      return Did::keep;
    default: {  // kUnicode: surrogates as JsonPrefix checks them
      const int h = hex_value(c);
      const bool low_needed = t.flags & kLowNeeded;
      if (h < 0) return Did::drop;
      if (t.hex_left == 4 && low_needed && h != 0xd) return Did::drop;
      if (t.hex_left == 3 && (t.hex_value == 0xd && h >= 0xc) != low_needed) return Did::drop;
      t.hex_value = static_cast<uint16_t>(t.hex_value * 16 + h);
      if (--t.hex_left == 0) {
        const bool high = t.hex_value >= 0xd800 && t.hex_value <= 0xdbff;
        t.flags = static_cast<uint8_t>(high ? (t.flags | kLowNeeded) : (t.flags & ~kLowNeeded));
        t.phase = kString;
        if (item && high) {
          t.vpoint = t.hex_value;  // kept till its low half comes
        } else if (item) {
          const uint32_t cp = low_needed ? 0x10000 + ((static_cast<uint32_t>(t.vpoint) - 0xd800) << 10) + (t.hex_value - 0xdc00u) : t.hex_value;
          t.vh = value_hash::fnv_code_point(t.vh, cp);
          t.vpoint = 0;
        }
      }
      return Did::keep;
    }
  }
}

// A key's byte: it must keep the key canonical (as Boost.JSON writes names: raw UTF-8, the short
// escapes, \u00xx in lower case for the other control characters) and leave it either a prefix
// of a declared name not yet seen or, where undeclared keys may come, anything.
SchemaPrefix::Did SchemaPrefix::key_byte(Top& t, uint8_t c, Out& out) const {
  if (t.phase == kString && t.utf8_left == 0 && c == '"') return key_close(t, out);
  switch (t.phase) {
    case kString:
      if (t.utf8_left) {
        if (!utf8_continuation(t, c)) return Did::drop;
      } else if (c == '\\') {
        t.phase = kEscape;
      } else if (c < 0x20 || (c >= 0x80 && !utf8_lead(t, c))) {
        return Did::drop;
      }
      break;
    case kEscape:
      if (c == 'u') t.phase = kUnicode, t.hex_left = 4, t.hex_value = 0;
      else if (c == '"' || c == '\\' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') t.phase = kString;
      else return Did::drop;
      break;
    default: {  // kUnicode: \u00 then 0 or 1, then a lower-case digit; the short-escaped ones excluded
      const int k = 4 - t.hex_left;
      const int h = (c >= 'A' && c <= 'F') ? -1 : hex_value(c);
      if (h < 0 || (k < 2 && h != 0) || (k == 2 && h > 1)) return Did::drop;
      if (k == 3 && t.hex_value == 0 && (h == 8 || h == 9 || h == 0xa || h == 0xc || h == 0xd)) return Did::drop;
      t.hex_value = static_cast<uint16_t>(t.hex_value * 16 + h);
      if (--t.hex_left == 0) t.phase = kString;
    }
  }
  const Frame& obj = out.frames[container(out.frames)];
  uint32_t lo = t.lo, hi = t.hi;
  narrow(schema_->nodes_[obj.node].names, lo, hi, t.at, c);
  if (!declared_viable(t, obj, lo, hi) && !extra_ok(t, obj)) return Did::drop;
  t.lo = lo, t.hi = hi, ++t.at;
  t.num = (t.num ^ c) * kFnvPrime;
  return Did::keep;
}

SchemaPrefix::Did SchemaPrefix::key_close(Top& t, Out& out) const {
  const auto& nodes = schema_->nodes_;
  const std::size_t obj = container(out.frames);
  const Frame f = out.frames[obj];
  const JsonSchema::Node& n = nodes[f.node];
  if (t.lo < t.hi && n.names[t.lo].size() == t.at) {  // a declared name (the shortest candidate)
    const uint32_t i = t.lo;
    if (((f.word >> i) & 1) || std::size_t{t.depth} + nodes[n.props[i]].min_depth > kMaxDepth) return Did::drop;
    out.frames[obj].word |= uint64_t{1} << i;
    t.node = n.props[i];
  } else {
    if (!extra_ok(t, f)) return Did::drop;
    for (std::size_t j = obj + 1; j < out.frames.size(); ++j)
      if (out.frames[j].word == t.num) return Did::drop;  // a key this object already has
    ++out.frames[obj].n_extra;
    Frame k;
    k.kind = kKeyFrame, k.word = t.num;
    out.frames.push_back(k);
    t.node = n.additional;
  }
  t.phase = kColon, t.flags = 0;
  return Did::keep;
}

SchemaPrefix::Did SchemaPrefix::number_byte(Top& t, std::size_t base, uint8_t c, Out& out) const {
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  const bool integer = !(n.types & kNumber), bounded = n.bounded && integer, neg = t.flags & kNeg;
  if (n.numbers) {  // bounds on numbers: digits and the point only
    const NumberBounds::Side& side = n.numbers->side[neg];
    if (t.phase == kNumMinus || t.phase == kNumDot || (is_digit(c) && t.phase != kNumZero))
      return is_digit(c) && decimal_digit(side, t, c) ? Did::keep : Did::drop;
    if (c == '.' && t.phase != kNumFrac) return decimal_point(side, t) ? Did::keep : Did::drop;
    if (!decimal_within(side, t)) return Did::drop;  // the number ends here: the byte is the container's
    if (n.mult_p && !mult_complete(n.mult_p, n.mult_k, t)) return Did::drop;
    if (!value_ended(t, out)) return Did::drop;
    return step(t, base, c, out);
  }
  switch (t.phase) {
    case kNumMinus:
      if (c == '0' && !bounded) t.phase = kNumZero;
      else if (c >= '1' && c <= '9' && (!bounded || int_viable(n.lo, n.hi, true, c - '0', n.int_mod))) t.phase = kNumInt, t.num = c - '0';
      else return Did::drop;
      return Did::keep;
    case kNumDot:
      if (!is_digit(c)) return Did::drop;
      t.phase = kNumFrac;
      return Did::keep;
    case kNumE:
      if (c == '+' || c == '-') t.phase = kNumEsign;
      else if (is_digit(c)) t.phase = kNumExp;
      else return Did::drop;
      return Did::keep;
    case kNumEsign:
      if (!is_digit(c)) return Did::drop;
      t.phase = kNumExp;
      return Did::keep;
    default:  // kNumZero, kNumInt, kNumFrac, kNumExp
      if (is_digit(c) && t.phase != kNumZero) {
        if (bounded) {  // a 20th digit would pass 2^63 (and could wrap the magnitude)
          if (t.num >= 1000000000000000000ull) return Did::drop;
          const uint64_t m = t.num * 10 + (c - '0');
          if (!int_viable(n.lo, n.hi, neg, m, n.int_mod)) return Did::drop;
          t.num = m;
        }
        return Did::keep;
      }
      if (!integer && c == '.' && (t.phase == kNumZero || t.phase == kNumInt)) {
        t.phase = kNumDot;
        return Did::keep;
      }
      if (!integer && !n.mult_p && (c == 'e' || c == 'E') && t.phase != kNumExp) {  // none under multipleOf
        t.phase = kNumE;
        return Did::keep;
      }
      // The number ends here: the byte is the container's.
      if (bounded && !int_in(n.lo, n.hi, neg, t.num, n.int_mod)) return Did::drop;
      if (n.mult_p && !mult_complete(n.mult_p, n.mult_k, t)) return Did::drop;
      if (!value_ended(t, out)) return Did::drop;
      return step(t, base, c, out);
  }
}

SchemaPrefix::Did SchemaPrefix::step(Top& t, std::size_t base, uint8_t c, Out& out) const {
  const auto& nodes = schema_->nodes_;
  const uint8_t run = t.ws;
  t.ws = 0;  // any other byte ends a run of whitespace
  const bool ws = is_ws(c);
  auto take_ws = [&] {
    if (run >= kMaxWhitespace) return Did::drop;
    t.ws = static_cast<uint8_t>(run + 1);
    return Did::keep;
  };
  switch (t.phase) {
    case kValue:
      if (ws) return take_ws();
      return value_start(t, base, c, out);
    case kObjFirst:
    case kObjKey: {
      if (ws) return take_ws();
      const std::size_t obj = container(out.frames);
      const Frame& f = out.frames[obj];
      if (c == '"') {
        if (!key_possible(t, obj, out)) return Did::drop;
        t.phase = kString, t.flags = kKey, t.lo = 0, t.hi = static_cast<uint32_t>(nodes[f.node].names.size());
        t.at = 0, t.num = kFnvBasis;
        return Did::keep;
      }
      if (c == '}' && t.phase == kObjFirst && (nodes[f.node].required & ~f.word) == 0) return close_container(t, out);
      return Did::drop;
    }
    case kColon:
      if (ws) return take_ws();
      if (c != ':') return Did::drop;
      t.phase = kValue;
      return Did::keep;
    case kArrFirst: {
      if (ws) return take_ws();
      Frame& f = out.frames.back();
      const JsonSchema::Node& a = nodes[f.node];
      if (c == ']') return a.min_items == 0 ? close_container(t, out) : Did::drop;
      if (a.max_items == 0) return Did::drop;
      f.word = 1;
      t.node = a.item(0);
      return value_start(t, base, c, out);
    }
    case kAfterValue: {
      if (ws) return take_ws();
      const std::size_t at = container(out.frames);
      Frame& f = out.frames[at];
      const JsonSchema::Node& n = nodes[f.node];
      if (f.kind == kObjFrame) {
        if (c == ',') {
          if (!key_possible(t, at, out)) return Did::drop;
          t.phase = kObjKey;
          return Did::keep;
        }
        return c == '}' && (n.required & ~f.word) == 0 ? close_container(t, out) : Did::drop;
      }
      if (c == ',') {
        if (f.word >= n.max_items) return Did::drop;
        // uniqueItems: a value the items so far have not had must be left, and room to keep it.
        if (n.unique && f.word >= n.unique_values) return Did::drop;
        const uint32_t item = n.item(f.word);
        if (std::size_t{t.depth} + nodes[item].min_depth > kMaxDepth) return Did::drop;
        ++f.word;
        t.node = item, t.phase = kValue;
        return Did::keep;
      }
      return c == ']' && f.word >= n.min_items ? close_container(t, out) : Did::drop;
    }
    case kString:
    case kEscape:
    case kUnicode:
      if (t.flags & kKey) return key_byte(t, c, out);
      return item_checked(value_string_byte(t, c, out), t, base, out);
    case kLiteral: {  // an item's literal was checked at its first byte
      const char* lit = kLiterals[t.lit];
      if (c != static_cast<uint8_t>(lit[t.lit_at])) return Did::drop;
      if (lit[++t.lit_at] == '\0' && !value_ended(t, out)) return Did::drop;
      return Did::keep;
    }
    case kChoice: {
      const JsonSchema::Node& e = nodes[t.node];
      uint32_t lo = t.lo, hi = t.hi;
      narrow(e.enum_text, lo, hi, t.at, c);
      if (enum_viable(e.enum_depth, lo, hi, t.depth)) {
        t.lo = lo, t.hi = hi, ++t.at;
        return item_checked(Did::keep, t, base, out);
      }
      // A whole value is never a prefix of another followed by its container's byte: the value
      // either goes on or has ended.
      if (!choice_exact(t) || !value_ended(t, out)) return Did::drop;
      return step(t, base, c, out);
    }
    case kDone:
      return Did::drop;
    default: {
      const uint8_t before = t.phase;
      const JsonSchema::Node& n = nodes[t.node];
      const Did d = number_byte(t, base, c, out);
      if (d != Did::keep || t.phase < kNumMinus || t.phase > kNumExp) return d;  // or the number has ended
      if (n.mult_p && !mult_byte(n.mult_p, n.mult_k, n.numbers != nullptr, t, before, c)) return Did::drop;
      if (!(t.flags & kItem)) return d;
      hash_number_byte(t, before, c);
      return item_checked(d, t, base, out);
    }
  }
}

bool SchemaPrefix::choice_exact(const Top& t) const {
  const JsonSchema::Node& e = schema_->nodes_[t.node];
  return t.lo < t.hi && e.enum_text[t.lo].size() == t.at && std::size_t{t.depth} + e.enum_depth[t.lo] <= kMaxDepth;
}

bool SchemaPrefix::number_complete(const Top& t) const {
  if (t.phase != kNumZero && t.phase != kNumInt && t.phase != kNumFrac && t.phase != kNumExp) return false;
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  if (n.mult_p && !mult_complete(n.mult_p, n.mult_k, t)) return false;
  if (n.numbers) return decimal_within(n.numbers->side[(t.flags & kNeg) != 0], t);
  return !(n.bounded && !(n.types & kNumber)) || int_in(n.lo, n.hi, t.flags & kNeg, t.num, n.int_mod);
}

bool SchemaPrefix::feed(uint8_t c) {
  if (st_.tops.size() == 1) {
    // One parse (the usual case, and the token trie's walk runs feed() at every node it visits):
    // stepped in place. Before refusing, a step changes no frame but the last (an array's item
    // count), so that is all there is to restore.
    const Top before = st_.tops[0];
    const std::size_t n = st_.frames.size();
    const Frame last = n ? st_.frames[n - 1] : Frame{};
    Top t = before;
    st_.tops.clear();
    switch (step(t, 0, c, st_)) {
      case Did::drop:
        st_.frames.resize(n);
        if (n) st_.frames[n - 1] = last;
        st_.tops.push_back(before);
        return false;
      case Did::keep:
        t.n_frames = static_cast<uint16_t>(st_.frames.size());
        st_.tops.push_back(t);
        return true;
      case Did::emitted:
        if (st_.tops.size() > 1) merge(st_);
        return true;
    }
  }
  Out out;
  std::size_t from = 0;
  for (std::size_t i = 0; i < st_.tops.size(); ++i) {
    Top t = st_.tops[i];
    const std::size_t base = out.frames.size();
    out.frames.resize(base + t.n_frames);
    std::memcpy(&out.frames[base], &st_.frames[from], t.n_frames * sizeof(Frame));
    from += t.n_frames;
    switch (step(t, base, c, out)) {
      case Did::drop:
        out.frames.resize(base);
        break;
      case Did::keep:
        t.n_frames = static_cast<uint16_t>(out.frames.size() - base);
        out.tops.push_back(t);
        break;
      case Did::emitted:
        break;
    }
  }
  if (out.tops.empty()) return false;
  if (out.tops.size() > 1) merge(out);
  st_ = std::move(out);
  return true;
}

void SchemaPrefix::merge(Out& out) {  // merges equal parses; keeps the first kMaxAlternatives
  Out kept;
  std::size_t at = 0;
  for (std::size_t i = 0; i < out.tops.size() && kept.tops.size() < kMaxAlternatives; at += out.tops[i++].n_frames) {
    const Top& t = out.tops[i];
    bool dup = false;
    for (std::size_t j = 0, kat = 0; j < kept.tops.size() && !dup; kat += kept.tops[j++].n_frames)
      dup = kept.tops[j] == t && std::equal(&out.frames[at], &out.frames[at] + t.n_frames, &kept.frames[kat]);
    if (dup) continue;
    kept.tops.push_back(t);
    const std::size_t b = kept.frames.size();
    kept.frames.resize(b + t.n_frames);
    std::memcpy(&kept.frames[b], &out.frames[at], t.n_frames * sizeof(Frame));
  }
  out = std::move(kept);
}

bool SchemaPrefix::feed(std::string_view bytes) { return feed_all(*this, bytes); }

bool SchemaPrefix::complete() const {
  for (std::size_t i = 0; i < st_.tops.size(); ++i) {
    const Top& t = st_.tops[i];
    if (t.phase == kDone) return true;
    if (t.depth == 0 && (number_complete(t) || (t.phase == kChoice && choice_exact(t)))) return true;
  }
  return false;
}

const Regex* SchemaPrefix::pattern_state(int32_t& state) const {
  if (st_.tops.size() != 1) return nullptr;
  const Top& t = st_.tops[0];
  if (t.phase != kString || (t.flags & (kKey | kLowNeeded))) return nullptr;
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  if (!n.pattern) return nullptr;
  state = t.re;
  return n.pattern.get();
}

int64_t SchemaPrefix::plain_room() const {
  int64_t room = -1;
  std::size_t end = 0;
  for (std::size_t i = 0; i < st_.tops.size(); ++i) {
    const Top& t = st_.tops[i];
    const std::size_t first = end;
    end += t.n_frames;
    if (t.phase != kString || (t.flags & kLowNeeded) || t.utf8_left) return -1;
    if (t.flags & kKey) {
      // A key that may be an undeclared one takes any run of plain characters (key_byte keeps
      // such a key whatever its bytes; it is told from the others at its close).
      std::size_t obj = end;
      while (obj > first && st_.frames[obj - 1].kind == kKeyFrame) --obj;
      if (obj == first || !extra_ok(t, st_.frames[obj - 1])) return -1;
      room = kNoLimit;
    } else {
      if (schema_->nodes_[t.node].pattern) return -1;  // its DFA decides, token by token
      const uint64_t most = schema_->nodes_[t.node].max_length;
      // An item of a uniqueItems array that reaches its maxLength must be a string no earlier
      // item was (item_viable): a token that fills it is not taken by its length alone.
      if ((t.flags & kItem) && most != UINT64_MAX) return -1;
      // A plain token of c characters is taken by some parse iff c <= the largest room.
      room = std::max<int64_t>(room, most == UINT64_MAX ? kNoLimit : static_cast<int64_t>(std::min<uint64_t>(most - t.at, kNoLimit - 1)));
    }
  }
  return room;
}

}  // namespace dpa::engine
