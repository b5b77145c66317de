// Helpers shared by the structured-output recognizers (structured_output.cpp, json_schema.cpp):
// all-or-nothing feeding of several bytes, and the small vector their states keep inline so that
// the token trie's walk, which copies a state at every node it visits, seldom touches the heap.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <type_traits>

namespace dpa::engine {

// JSON's lexical classes (RFC 8259), shared by the recognizers.
inline bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
inline bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
inline int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
inline constexpr const char* kLiterals[] = {"true", "false", "null"};

// A recognizer's feed() of several bytes: all of them, or none (the state as before).
template <typename State>
bool feed_all(State& s, std::string_view bytes) {
  const State before = s;
  for (char c : bytes)
    if (!s.feed(static_cast<uint8_t>(c))) {
      s = before;
      return false;
    }
  return true;
}

// A vector of trivially copyable T holding up to N of them inline; a copy copies the elements in
// use only (memcpy), and allocates only past N.
template <typename T, std::size_t N>
class SmallVec {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  SmallVec() = default;
  SmallVec(const SmallVec& o) { assign(o); }
  SmallVec& operator=(const SmallVec& o) {
    if (this != &o) assign(o);
    return *this;
  }
  SmallVec(SmallVec&& o) noexcept { take(o); }
  SmallVec& operator=(SmallVec&& o) noexcept {
    if (this != &o) take(o);
    return *this;
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* data() { return heap_ ? heap_.get() : reinterpret_cast<T*>(inline_); }
  const T* data() const { return heap_ ? heap_.get() : reinterpret_cast<const T*>(inline_); }
  T& operator[](std::size_t i) { return data()[i]; }
  const T& operator[](std::size_t i) const { return data()[i]; }
  T& back() { return data()[size_ - 1]; }
  void clear() { size_ = 0; }
  void push_back(const T& v) {
    if (size_ == cap_) grow(size_ + 1);
    data()[size_++] = v;
  }
  void pop_back() { --size_; }
  void resize(std::size_t n) {  // shrinking, or growing with copies of nothing in particular (callers overwrite)
    if (n > cap_) grow(n);
    size_ = static_cast<uint32_t>(n);
  }
  // Appends a copy of this vector's own elements [from, from + n).
  void append_own(std::size_t from, std::size_t n) {
    if (size_ + n > cap_) grow(size_ + n);
    std::memcpy(data() + size_, data() + from, n * sizeof(T));
    size_ += static_cast<uint32_t>(n);
  }

 private:
  void grow(std::size_t need) {
    std::size_t cap = cap_ * 2;
    while (cap < need) cap *= 2;
    std::unique_ptr<T[]> h(new T[cap]);
    std::memcpy(h.get(), data(), size_ * sizeof(T));
    heap_ = std::move(h);
    cap_ = static_cast<uint32_t>(cap);
  }
  void assign(const SmallVec& o) {
    size_ = 0;
    if (o.size_ > cap_) grow(o.size_);
    std::memcpy(data(), o.data(), o.size_ * sizeof(T));
    size_ = o.size_;
  }
  void take(SmallVec& o) {
    if (o.heap_) {
      heap_ = std::move(o.heap_);
      cap_ = o.cap_;
    } else {
      heap_.reset();
      cap_ = N;
      std::memcpy(inline_, o.inline_, o.size_ * sizeof(T));
    }
    size_ = o.size_;
    o.size_ = 0, o.cap_ = N;
  }

  alignas(T) unsigned char inline_[N * sizeof(T)];
  std::unique_ptr<T[]> heap_;
  uint32_t cap_ = N, size_ = 0;
};

}  // namespace dpa::engine
