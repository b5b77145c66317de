// Loads a Hugging Face tokenizer.json (byte-level BPE) with Boost.JSON and implements encode/decode.
#include "text/tokenizer.h"

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "text/tokenizer_parts.h"

namespace dpa::text {

namespace json = boost::json;
using namespace detail;

namespace {

// GPT-2's own pre-tokenizer regex, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Reads JSON fields with messages that name the file and the key path.
struct Reader {
  const std::string& source;

  [[noreturn]] void fail(const std::string& what) const { throw Error(source + ": " + what); }

  const json::object& object(const json::value& v, const std::string& path) const {
    if (!v.is_object()) fail("\"" + path + "\" must be an object");
    return v.get_object();
  }
  const json::array& array(const json::value& v, const std::string& path) const {
    if (!v.is_array()) fail("\"" + path + "\" must be an array");
    return v.get_array();
  }
  std::string string(const json::value& v, const std::string& path) const {
    if (!v.is_string()) fail("\"" + path + "\" must be a string");
    return std::string(v.get_string());
  }
  int32_t id(const json::value& v, const std::string& path) const {
    if (!v.is_int64() && !v.is_uint64()) fail("\"" + path + "\" must be an integer token id");
    int64_t x = v.is_int64() ? v.get_int64() : int64_t(v.get_uint64());
    if (x < 0 || x > INT32_MAX) fail("\"" + path + "\" = " + std::to_string(x) + " is not a valid token id");
    return int32_t(x);
  }
  bool flag(const json::object& o, const char* key, bool fallback) const {
    auto* v = o.if_contains(key);
    if (!v || v->is_null()) return fallback;
    if (!v->is_bool()) fail(std::string("\"") + key + "\" must be true or false");
    return v->get_bool();
  }
  std::string type(const json::value& v, const std::string& path) const {
    const auto& o = object(v, path);
    auto* t = o.if_contains("type");
    if (!t) fail("\"" + path + "\" has no \"type\"");
    return string(*t, path + ".type");
  }
};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(const json::value& root, const std::string& source);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int64_t vocab_size() const override { return int64_t(id_bytes_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override;
  void set_special_affixes(std::vector<int32_t> before, std::vector<int32_t> after) override {
    bos_ids_ = std::move(before);
    eos_ids_ = std::move(after);
  }

 private:
  void load_model(const json::value& model, const Reader& r);
  void load_normalizer(const json::value& v, const Reader& r, const std::string& path) const;
  void load_pre_tokenizer(const json::value& v, const Reader& r, const std::string& path);
  void load_decoder(const json::value& v, const Reader& r, const std::string& path) const;
  void load_post_processor(const json::value& v, const Reader& r, const std::string& path);
  int32_t resolve_token(const std::string& token, const Reader& r, const std::string& path) const;

  std::unordered_map<std::string, int32_t> vocab_;  // model vocab, byte-level spellings
  std::unique_ptr<BpeModel> model_;
  std::vector<AddedToken> added_;
  std::unordered_map<std::string, int32_t> added_by_content_;  // -> index into added_
  std::unique_ptr<AddedTokenMatcher> matcher_;
  std::vector<PreTokStep> steps_;
  bool has_byte_level_ = false;
  std::vector<int32_t> bos_ids_;  // post-processor ids before sequence A
  std::vector<int32_t> eos_ids_;  // post-processor ids after sequence A
  // Per id: the raw bytes decode() emits, the spelling id_to_token() returns, and flags.
  std::vector<std::string> id_bytes_;
  std::vector<std::string> id_spelling_;
  std::vector<uint8_t> id_known_;
  std::vector<uint8_t> id_special_;
};

BpeTokenizer::BpeTokenizer(const json::value& root, const std::string& source) {
  Reader r{source};
  const auto& top = r.object(root, "(root)");
  auto* model = top.if_contains("model");
  if (!model || model->is_null()) r.fail("missing \"model\"");
  load_model(*model, r);

  if (auto* v = top.if_contains("added_tokens"); v && !v->is_null()) {
    const auto& arr = r.array(*v, "added_tokens");
    for (size_t i = 0; i < arr.size(); ++i) {
      const std::string path = "added_tokens[" + std::to_string(i) + "]";
      const auto& o = r.object(arr[i], path);
      AddedToken t;
      auto* content = o.if_contains("content");
      auto* id = o.if_contains("id");
      if (!content || !id) r.fail(path + " needs \"id\" and \"content\"");
      t.content = r.string(*content, path + ".content");
      t.id = r.id(*id, path + ".id");
      t.special = r.flag(o, "special", false);
      t.lstrip = r.flag(o, "lstrip", false);
      t.rstrip = r.flag(o, "rstrip", false);
      t.single_word = r.flag(o, "single_word", false);
      t.normalized = r.flag(o, "normalized", !t.special);
      added_by_content_[t.content] = int32_t(added_.size());
      added_.push_back(std::move(t));
    }
  }
  matcher_ = std::make_unique<AddedTokenMatcher>(added_);

  auto field = [&](const char* key) -> const json::value* {
    auto* v = top.if_contains(key);
    return v && !v->is_null() ? v : nullptr;
  };
  if (auto* v = field("normalizer")) load_normalizer(*v, r, "normalizer");
  if (auto* v = field("pre_tokenizer")) load_pre_tokenizer(*v, r, "pre_tokenizer");
  if (!has_byte_level_) {
    r.fail("pre_tokenizer has no ByteLevel step: only byte-level BPE tokenizers are supported");
  }
  if (auto* v = field("decoder")) load_decoder(*v, r, "decoder");
  if (auto* v = field("post_processor")) load_post_processor(*v, r, "post_processor");

  // Id tables: model tokens first, then added tokens (which win for decode, as in HF).
  int64_t n_ids = 0;
  for (const auto& [tok, id] : vocab_) n_ids = std::max<int64_t>(n_ids, int64_t(id) + 1);
  for (const auto& t : added_) n_ids = std::max<int64_t>(n_ids, int64_t(t.id) + 1);
  id_bytes_.assign(size_t(n_ids), {});
  id_spelling_.assign(size_t(n_ids), {});
  id_known_.assign(size_t(n_ids), 0);
  id_special_.assign(size_t(n_ids), 0);
  for (const auto& [tok, id] : vocab_) {
    std::string bytes;
    if (!byte_level_unspell(tok, bytes)) bytes = tok;
    id_bytes_[size_t(id)] = std::move(bytes);
    id_spelling_[size_t(id)] = tok;
    id_known_[size_t(id)] = 1;
  }
  for (const auto& t : added_) {
    id_bytes_[size_t(t.id)] = t.content;
    id_spelling_[size_t(t.id)] = t.content;
    id_known_[size_t(t.id)] = 1;
    id_special_[size_t(t.id)] = t.special ? 1 : 0;
  }
}

void BpeTokenizer::load_model(const json::value& model, const Reader& r) {
  const auto& o = r.object(model, "model");
  // Hugging Face writes "type"; very old files omit it, but then nothing says the model is BPE.
  auto* type = o.if_contains("type");
  if (!type) r.fail("\"model\" has no \"type\" (expected \"BPE\")");
  std::string t = r.string(*type, "model.type");
  if (t != "BPE") r.fail("unsupported model type \"" + t + "\" (only \"BPE\" is supported)");

  auto* vocab = o.if_contains("vocab");
  if (!vocab) r.fail("\"model\" has no \"vocab\"");
  for (const auto& [key, value] : r.object(*vocab, "model.vocab")) {
    vocab_[std::string(key)] = r.id(value, "model.vocab[\"" + std::string(key) + "\"]");
  }

  std::vector<std::pair<std::string, std::string>> merges;
  if (auto* m = o.if_contains("merges"); m && !m->is_null()) {
    const auto& arr = r.array(*m, "model.merges");
    merges.reserve(arr.size());
    for (size_t i = 0; i < arr.size(); ++i) {
      const std::string path = "model.merges[" + std::to_string(i) + "]";
      if (arr[i].is_string()) {
        // Old format "a b": exactly one space, since byte-level tokens never contain one.
        std::string s(arr[i].get_string());
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
          r.fail(path + " = \"" + s + "\" is not of the form \"left right\"");
        }
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (arr[i].is_array() && arr[i].get_array().size() == 2) {
        const auto& pair = arr[i].get_array();
        merges.emplace_back(r.string(pair[0], path + "[0]"), r.string(pair[1], path + "[1]"));
      } else {
        r.fail(path + " must be a \"left right\" string or a [left, right] pair");
      }
    }
  }

  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto* v = o.if_contains(key);
    if (v && !v->is_null() && !(v->is_string() && v->get_string().empty())) {
      r.fail(std::string("model.") + key + " is not supported by the byte-level BPE tokenizer");
    }
  }
  if (r.flag(o, "byte_fallback", false)) r.fail("model.byte_fallback is not supported (byte-level BPE needs none)");

  BpeOptions options;
  options.ignore_merges = r.flag(o, "ignore_merges", false);
  if (auto* unk = o.if_contains("unk_token"); unk && !unk->is_null()) {
    std::string name = r.string(*unk, "model.unk_token");
    auto it = vocab_.find(name);
    if (it == vocab_.end()) r.fail("model.unk_token \"" + name + "\" is not in the vocab");
    options.unk_id = it->second;
  }
  model_ = std::make_unique<BpeModel>(vocab_, merges, options, r.source);
}

void BpeTokenizer::load_normalizer(const json::value& v, const Reader& r, const std::string& path) const {
  std::string type = r.type(v, path);
  if (type == "Sequence") {
    auto* list = v.get_object().if_contains("normalizers");
    if (!list) r.fail(path + " (Sequence) has no \"normalizers\"");
    const auto& arr = r.array(*list, path + ".normalizers");
    for (size_t i = 0; i < arr.size(); ++i) load_normalizer(arr[i], r, path + ".normalizers[" + std::to_string(i) + "]");
    return;
  }
  r.fail(path + " of type \"" + type + "\" is not supported (only null or an empty Sequence)");
}

void BpeTokenizer::load_pre_tokenizer(const json::value& v, const Reader& r, const std::string& path) {
  std::string type = r.type(v, path);
  const auto& o = v.get_object();
  if (type == "Sequence") {
    auto* list = o.if_contains("pretokenizers");
    if (!list) r.fail(path + " (Sequence) has no \"pretokenizers\"");
    const auto& arr = r.array(*list, path + ".pretokenizers");
    for (size_t i = 0; i < arr.size(); ++i) {
      load_pre_tokenizer(arr[i], r, path + ".pretokenizers[" + std::to_string(i) + "]");
    }
  } else if (type == "Split") {
    PreTokStep step;
    step.kind = PreTokStep::Kind::split;
    auto* pattern = o.if_contains("pattern");
    if (!pattern) r.fail(path + " (Split) has no \"pattern\"");
    const auto& p = r.object(*pattern, path + ".pattern");
    if (auto* re = p.if_contains("Regex")) {
      step.regex = std::make_unique<Regex>(r.string(*re, path + ".pattern.Regex"), false, r.source);
    } else if (auto* s = p.if_contains("String")) {
      step.regex = std::make_unique<Regex>(r.string(*s, path + ".pattern.String"), true, r.source);
    } else {
      r.fail(path + ".pattern needs \"Regex\" or \"String\"");
    }
    std::string behavior = "Isolated";
    if (auto* b = o.if_contains("behavior")) behavior = r.string(*b, path + ".behavior");
    if (behavior == "Removed") {
      step.behavior = SplitBehavior::removed;
    } else if (behavior == "Isolated") {
      step.behavior = SplitBehavior::isolated;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = SplitBehavior::merged_with_previous;
    } else if (behavior == "MergedWithNext") {
      step.behavior = SplitBehavior::merged_with_next;
    } else if (behavior == "Contiguous") {
      step.behavior = SplitBehavior::contiguous;
    } else {
      r.fail(path + ".behavior \"" + behavior + "\" is unknown");
    }
    step.invert = r.flag(o, "invert", false);
    steps_.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    PreTokStep step;
    step.kind = PreTokStep::Kind::byte_level;
    step.add_prefix_space = r.flag(o, "add_prefix_space", true);
    if (r.flag(o, "use_regex", true)) step.regex = std::make_unique<Regex>(kGpt2Pattern, false, r.source);
    has_byte_level_ = true;
    steps_.push_back(std::move(step));
  } else {
    r.fail(path + " of type \"" + type + "\" is not supported (Sequence, Split, ByteLevel)");
  }
}

void BpeTokenizer::load_decoder(const json::value& v, const Reader& r, const std::string& path) const {
  std::string type = r.type(v, path);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    auto* list = v.get_object().if_contains("decoders");
    if (!list) r.fail(path + " (Sequence) has no \"decoders\"");
    const auto& arr = r.array(*list, path + ".decoders");
    for (size_t i = 0; i < arr.size(); ++i) load_decoder(arr[i], r, path + ".decoders[" + std::to_string(i) + "]");
    return;
  }
  r.fail(path + " of type \"" + type + "\" is not supported (only ByteLevel)");
}

int32_t BpeTokenizer::resolve_token(const std::string& token, const Reader& r, const std::string& path) const {
  if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return added_[size_t(it->second)].id;
  if (auto it = vocab_.find(token); it != vocab_.end()) return it->second;
  r.fail(path + " names token \"" + token + "\" that is neither an added token nor in the vocab");
}

void BpeTokenizer::load_post_processor(const json::value& v, const Reader& r, const std::string& path) {
  std::string type = r.type(v, path);
  const auto& o = v.get_object();
  if (type == "ByteLevel") return;  // offsets only; no ids
  if (type == "Sequence") {
    auto* list = o.if_contains("processors");
    if (!list) r.fail(path + " (Sequence) has no \"processors\"");
    const auto& arr = r.array(*list, path + ".processors");
    for (size_t i = 0; i < arr.size(); ++i) load_post_processor(arr[i], r, path + ".processors[" + std::to_string(i) + "]");
    return;
  }
  if (type != "TemplateProcessing") {
    r.fail(path + " of type \"" + type + "\" is not supported (ByteLevel, TemplateProcessing, Sequence)");
  }
  auto* single = o.if_contains("single");
  if (!single) r.fail(path + " (TemplateProcessing) has no \"single\"");
  const json::object* specials = nullptr;
  if (auto* s = o.if_contains("special_tokens"); s && !s->is_null()) specials = &r.object(*s, path + ".special_tokens");
  bool seen_a = false;
  const auto& items = r.array(*single, path + ".single");
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string ipath = path + ".single[" + std::to_string(i) + "]";
    const auto& item = r.object(items[i], ipath);
    if (auto* seq = item.if_contains("Sequence")) {
      std::string id = r.string(r.object(*seq, ipath + ".Sequence").at("id"), ipath + ".Sequence.id");
      if (id != "A") r.fail(ipath + " refers to sequence \"" + id + "\" in the single-sequence template");
      seen_a = true;
    } else if (auto* sp = item.if_contains("SpecialToken")) {
      auto* idv = r.object(*sp, ipath + ".SpecialToken").if_contains("id");
      if (!idv) r.fail(ipath + ".SpecialToken has no \"id\"");
      std::string name = r.string(*idv, ipath + ".SpecialToken.id");
      std::vector<int32_t> ids;
      const json::value* entry = specials ? specials->if_contains(name) : nullptr;
      if (entry && entry->is_object() && entry->get_object().if_contains("ids")) {
        const auto& arr = r.array(entry->get_object().at("ids"), path + ".special_tokens." + name + ".ids");
        for (const auto& x : arr) ids.push_back(r.id(x, path + ".special_tokens." + name + ".ids"));
      } else {
        ids.push_back(resolve_token(name, r, ipath));
      }
      auto& dest = seen_a ? eos_ids_ : bos_ids_;
      dest.insert(dest.end(), ids.begin(), ids.end());
    } else {
      r.fail(ipath + " must hold \"Sequence\" or \"SpecialToken\"");
    }
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (size_t bad = find_invalid_utf8(text); bad != std::string_view::npos) {
    throw Error("tokenizer: input text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids.insert(ids.end(), bos_ids_.begin(), bos_ids_.end());
  Pieces pieces;
  for (const Segment& seg : matcher_->split(text)) {
    if (seg.token_idx >= 0) {
      ids.push_back(added_[size_t(seg.token_idx)].id);
      continue;
    }
    run_pre_tokenizer(steps_, text.substr(seg.begin, seg.end - seg.begin), pieces);
    for (std::string_view word : pieces.items) model_->encode_word(word, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), eos_ids_.begin(), eos_ids_.end());
  return ids;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= id_bytes_.size() || !id_known_[size_t(id)]) {
      throw Error("tokenizer: decode got unknown token id " + std::to_string(id) + " (vocab size " +
                  std::to_string(id_bytes_.size()) + ")");
    }
    if (skip_special_tokens && id_special_[size_t(id)]) continue;
    out += id_bytes_[size_t(id)];
  }
  return out;
}

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_by_content_.find(std::string(token)); it != added_by_content_.end()) {
    return added_[size_t(it->second)].id;
  }
  if (auto it = vocab_.find(std::string(token)); it != vocab_.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= id_spelling_.size() || !id_known_[size_t(id)]) return std::nullopt;
  return id_spelling_[size_t(id)];
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < id_special_.size() && id_special_[size_t(id)];
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_json(const std::string& json_text, const std::string& source) {
  json::value root;
  try {
    root = json::parse(json_text);
  } catch (const std::exception& e) {
    throw Error(source + ": not valid JSON: " + e.what());
  }
  return std::make_unique<BpeTokenizer>(root, source);
}

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open tokenizer file");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (!in.good() && !in.eof()) throw Error(path + ": read error");
  return from_json(buffer.str(), path);
}

}  // namespace dpa::text
