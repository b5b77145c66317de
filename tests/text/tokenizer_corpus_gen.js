// Writes tests/text/corpus/tokenizer_corpus.txt: hand-written lines of many kinds plus
// deterministic variations and mixes of them. The output is committed; rerun only to change it.
//
// usage: node tests/text/tokenizer_corpus_gen.js [OUT]
// Lines never contain "\n" or "\r" (the tests join lines with "\n" and "\r\n" themselves), nor
// U+FEFF / U+0085, on which JavaScript's \s and PCRE2's \s disagree.
"use strict";
const fs = require("fs");
const path = require("path");

const prose = [
  "The quick brown fox jumps over the lazy dog.",
  "It was the best of times; it was the worst of times, or so the story goes.",
  "Mixture-of-experts layers route each token to a few experts out of many.",
  "Don't panic: we'll fix it, they've said, and you're sure it's fine, aren't you?",
  "She said, \"I can't believe it's already 5 o'clock!\"",
  "Prices rose 3.5% in Q3 2024, compared with 2.1% a year earlier.",
  "E-mail me at jane.doe@example.com or visit https://example.org/path?q=1&r=two#frag.",
  "Dr. Smith (the one from St. Louis) arrived at 10:45 a.m. sharp.",
  "THIS LINE IS SHOUTING IN ALL CAPS FOR NO GOOD REASON!!!",
  "well... maybe; maybe not -- who knows?",
  "A tokenizer splits text into pieces, then merges bytes by rank.",
  "Data parallel attention keeps the KV cache local to each rank.",
  "Expert parallelism sends tokens across GPUs with an all-to-all exchange.",
  "I'd've thought you'd know better, y'all.",
  "Rock 'n' roll isn't dead; it's just resting.",
  "The café served crème brûlée and a piña colada to the naïve façade designer.",
  "Übermäßige Größe führt zu Ärger, sagte der Bäcker in Köln.",
  "¿Dónde está la biblioteca? ¡Aquí está!",
  "L'été dernier, nous sommes allés à Montréal.",
  "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
  "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
  "Mathematics: ∀x ∈ ℝ, x² ≥ 0; ∑_{i=1}^{n} i = n(n+1)/2; √2 ≈ 1.41421.",
  "Arrows → ← ↑ ↓ ⇒ and boxes ┌─┐ │ └─┘ and bullets • ◦ ▪.",
  "Currency: $100, €85.50, £70, ¥10000, ₹750, ₿0.0021.",
  "Fractions ½ ¼ ¾ and superscripts x¹ y² z³ and ordinals 1st 2nd 3rd 4th.",
  "Quotes: “curly”, ‘single’, «guillemets», „German“ and 「Japanese」.",
  "Dashes: hyphen - en – em — minus − and ellipsis …",
  "Version v1.2.3-rc.4+build.567 was released on 2023-11-22T22:45:00Z.",
  "IPv4 192.168.0.1, IPv6 fe80::1ff:fe23:4567:890a, MAC 00:1A:2B:3C:4D:5E.",
  "Temperature: -40°C equals -40°F; water boils at 100 °C.",
  "Hashtags #NLP #LLM and mentions @deepseek_ai @huggingface.",
  "Path C:\\Users\\me\\Documents\\file.txt and /usr/local/bin/env.",
  "Roman numerals: Ⅰ Ⅱ Ⅲ Ⅳ Ⅻ; circled ① ② ③; fullwidth ＡＢＣ１２３.",
  "He wrote 1,234,567.89 dollars — or was it 1.234.567,89 euros?",
  "The ratio was 16:9, the score 3-2, the odds 7/1.",
];

const code = [
  "#include <vector>",
  "int main(int argc, char** argv) { return argc > 1 ? 0 : 1; }",
  "template <typename T> T add(T a, T b) { return a + b; }",
  "std::vector<int32_t> ids; ids.reserve(1024);",
  "for (size_t i = 0; i < n; ++i) sum += x[i] * y[i];",
  "if (ptr == nullptr) throw std::runtime_error(\"null\");",
  "    auto [key, value] = *map.find(\"alpha\");",
  "def fib(n):",
  "    return n if n < 2 else fib(n - 1) + fib(n - 2)",
  "print(f\"{name!r:>10} = {value:.3f}\")",
  "class Node:  # a tree node",
  "        self.children: list[\"Node\"] = []",
  "lambda x, y=2, *args, **kwargs: (x, y, args, kwargs)",
  "const add = (a, b) => a + b;",
  "let s = `template ${literal} with ${1 + 2}`;",
  "export default function App() { return <div className=\"app\">Hi</div>; }",
  "fn main() { let v: Vec<u8> = vec![0xde, 0xad, 0xbe, 0xef]; println!(\"{:?}\", v); }",
  "impl<'a> Iterator for Words<'a> { type Item = &'a str; }",
  "func (s *Server) Handle(w http.ResponseWriter, r *http.Request) {",
  "\tif err != nil {",
  "\t\treturn fmt.Errorf(\"open %s: %w\", path, err)",
  "\t}",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
  "for f in *.txt; do wc -l \"$f\"; done | sort -n",
  "echo $((1 << 10)) && export PATH=\"$HOME/bin:$PATH\"",
  "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"></head></html>",
  "{\"model\": \"deepseek-v3\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
  "a:",
  "  - b: 1",
  "x = [1,2,3]; y = {'k': (4, 5)}; z = x[::-1]",
  "// TODO(someone): handle the edge case where n == 0",
  "/* block comment spanning */ int y = 0x7fffffff;",
  "public static void main(String[] args) { System.out.println(\"Hello\"); }",
  "    @Override public int hashCode() { return Objects.hash(a, b); }",
  "local t = { 1, 2, 3 }; for i, v in ipairs(t) do print(i, v) end",
  "my %h = (a => 1, b => 2); print join(',', keys %h), \"\\n\";",
  "__global__ void axpy(float a, const float* x, float* y, int n) {",
  "  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] += a * x[i];",
  "regex = r'^(?P<user>[\\w.+-]+)@(?P<host>[\\w-]+\\.[\\w.]+)$'",
  "cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release",
  "ninja -C build -j2 && ctest --test-dir build --output-on-failure",
  "git log --oneline --graph --decorate | head -n 20",
  "match value { Some(x) if x > 0 => x, _ => -1 }",
  "x := map[string]int{\"one\": 1, \"two\": 2}",
  "$ curl -sS -X POST http://localhost:8000/v1/chat/completions -d @req.json",
];

const cjk = [
  "我们正在测试分词器，它需要正确处理中文文本。",
  "今天天气很好，我们去公园散步吧！",
  "深度求索发布了新的混合专家模型。",
  "机器学习和自然语言处理是人工智能的重要分支。",
  "这个数字是１２３４５，那个是67890。",
  "龍鳳呈祥，繁體中文也要支援。",
  "中文与English混合的句子，还有数字2024年。",
  "「你好」他说，『再见』她回答。",
  "私は日本語を勉強しています。",
  "東京タワーはとても高いです。",
  "カタカナとひらがなと漢字が混ざった文章です。",
  "ｶﾀｶﾅ半角もテストします。",
  "今日は2024年11月22日、金曜日です。",
  "ラーメン、寿司、天ぷらが好きです！",
  "한국어 문장도 토크나이저가 처리해야 합니다.",
  "안녕하세요, 만나서 반갑습니다!",
  "서울은 대한민국의 수도입니다.",
  "한글과 漢字와 English가 섞인 문장.",
  "ㄱㄴㄷㄹ 자모만 있는 경우도 있습니다.",
];

const otherScripts = [
  "مرحبا بالعالم، هذا اختبار للنص العربي.",
  "الأرقام العربية: ٠١٢٣٤٥٦٧٨٩",
  "שלום עולם, זהו מבחן.",
  "नमस्ते दुनिया, यह एक परीक्षण है। १२३४",
  "สวัสดีชาวโลก นี่คือการทดสอบ",
  "Xin chào thế giới, đây là một bài kiểm tra.",
  "Γειά σου Κόσμε! Ελληνικά με τόνους: άέήίόύώ.",
  "Привет, мир! Ёжик в тумане.",
  "Ⴀ ქართული ენა: გამარჯობა მსოფლიო",
  "Հայերեն՝ Բարեւ աշխարհ",
  "ᚠᚢᚦᚨᚱᚲ runes and ꦗꦮ Javanese",
  "Combining: e\u0301 a\u0300 o\u0308 n\u0303 and Z\u0335\u0321a\u0334l\u0337g\u0336o\u0338",
  "Zero width: a\u200bb c\u200cd e\u200de and word\u2060joiner",
  "No-break\u00a0space, thin\u2009space, ideographic\u3000space, em\u2003space.",
];

const emoji = [
  "I love pizza 🍕 and tacos 🌮!",
  "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍👨 technologist: 👩🏽‍💻",
  "Skin tones: 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
  "Flags: 🇺🇸 🇯🇵 🇨🇳 🇰🇷 🇩🇪 🇫🇷 🇧🇷 🏳️‍🌈 🏴‍☠️",
  "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ and variation ☺︎ ☺️",
  "Faces 😀😃😄😁😆😅😂🤣🥲☺️😊😇",
  "Subdivision flag: 🏴󠁧󠁢󠁳󠁣󠁴󠁿 and rainbow 🌈",
  "Rocket 🚀 to the moon 🌕 with 💯 confidence",
  "Hands 🙌👏🤝🫶 and hearts ❤️🧡💛💚💙💜🖤",
  "ZWJ jobs: 🧑‍🚀 🧑‍🍳 🧑‍⚕️ 👨‍🔬 👩‍🏫",
];

const specials = [
  "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜>Hi there!<｜end▁of▁sentence｜>",
  "<｜User｜>What is 2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>",
  "<｜begin▁of▁sentence｜><｜begin▁of▁sentence｜>double bos",
  "text before <｜User｜> text after",
  "<|User|> ascii look-alike, not the special token",
  "<｜User> missing a bar, <｜User｜ missing a bracket, <User｜> and ｜User｜>",
  "<<｜User｜>> nested brackets",
  "<｜begin of sentence｜> with plain spaces instead of ▁",
  "<｜begin▁of▁sentence｜ almost",
  "<｜end▁of▁sentence｜><｜end▁of▁sentence｜><｜end▁of▁sentence｜>",
  "<|EOT|> end of turn <|EOT| <|eot|>",
  "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather",
  "```json",
  "{\"city\": \"Paris\"}",
  "```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
  "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{\"temp\": 21}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
  "<｜fim▁begin｜>def f(x):<｜fim▁hole｜>    return y<｜fim▁end｜>",
  "<｜place▁holder▁no▁5｜> and <｜place▁holder▁no▁799｜> and <｜place▁holder▁no▁800｜>",
  "<｜▁pad▁｜><｜▁pad▁｜> padding",
  "▁▁▁ lower one-eighth blocks ▁ and fullwidth bars ｜｜｜",
  "<think>reasoning here</think> answer",
  "Ġ and Ċ and ĉ are byte-level spellings, typed literally.",
];

// Deterministic PRNG (mulberry32) so the corpus is reproducible.
function rng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20241122);
const pick = (arr) => arr[Math.floor(rand() * arr.length)];
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

const out = [];
const add = (s) => {
  for (const line of s.split("\n")) out.push(line);
};
for (const group of [prose, code, cjk, otherScripts, emoji, specials]) group.forEach(add);

// Digits and long numbers.
for (let len = 1; len <= 40; ++len) {
  let s = "";
  for (let i = 0; i < len; ++i) s += String(int(i === 0 ? 1 : 0, 9));
  out.push(s);
  out.push(`n=${s}, -${s}.${s.slice(0, 3)} and ${s}e-${len}`);
}
for (let i = 0; i < 40; ++i) {
  out.push(`${int(1, 9999)}.${int(0, 99)} ${int(0, 255)}.${int(0, 255)}.${int(0, 255)}.${int(0, 255)} +1-${int(200, 999)}-${int(100, 999)}-${int(1000, 9999)}`);
}
out.push("０１２３４５６７８９ fullwidth, ٠١٢٣٤٥٦٧٨٩ Arabic-Indic, ०१२३४५६७८९ Devanagari, ⁰¹²³ super, ₀₁₂₃ sub");

// Whitespace: runs, tabs, leading and trailing spaces, blank and space-only lines.
for (let n = 0; n <= 24; ++n) {
  out.push(" ".repeat(n));
  out.push(`word${" ".repeat(n)}word`);
  out.push(`${"\t".repeat(n % 6)}indented ${n}${" ".repeat(n % 5)}`);
}
for (let i = 0; i < 30; ++i) {
  const ws = [" ", "  ", "\t", " \t ", "\u3000", "\u00a0", "   "];
  out.push(`${pick(ws)}${pick(prose)}${pick(ws)}${pick(ws)}`);
}

// Mixes: fragments from every group joined by varied separators.
const all = [prose, code, cjk, otherScripts, emoji, specials];
const seps = [" ", "", "  ", "\t", " | ", ", ", "。", " — ", " 🙂 ", "<｜User｜>", "<｜Assistant｜>"];
while (out.length < 2200) {
  const n = int(1, 4);
  const parts = [];
  for (let i = 0; i < n; ++i) {
    let frag = pick(pick(all));
    if (rand() < 0.3) {
      const a = int(0, frag.length);
      const b = int(a, frag.length);
      frag = Array.from(frag).slice(a, b).join("");
    }
    if (rand() < 0.15) frag = frag.toUpperCase();
    if (rand() < 0.15) frag = frag.toLowerCase();
    parts.push(frag);
  }
  let line = "";
  parts.forEach((p, i) => (line += (i ? pick(seps) : "") + p));
  if (rand() < 0.1) line += " ".repeat(int(1, 6));
  if (rand() < 0.05) line = String(int(0, 1e9)) + line;
  out.push(line);
}

for (const line of out) {
  if (/[\r\n\uFEFF\u0085]/.test(line)) throw new Error(`bad corpus line: ${JSON.stringify(line)}`);
}
const dest = process.argv[2] || path.join(__dirname, "corpus", "tokenizer_corpus.txt");
fs.mkdirSync(path.dirname(dest), { recursive: true });
fs.writeFileSync(dest, out.join("\n") + "\n");
process.stdout.write(`wrote ${out.length} lines to ${dest}\n`);
