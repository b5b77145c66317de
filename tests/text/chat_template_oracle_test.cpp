// Renders every template of tests/text/templates with every message list and compares with what
// Python's jinja2 rendered (chat_template_oracle.py, run by the CTest fixture).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "text/chat_template.h"

namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

std::string g_templates_dir;
std::string g_messages_path;
std::string g_oracle_path;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The context apply_chat_template builds: tools null when absent, special tokens only when set.
json::object make_context(const json::object& c, const json::object& tokens) {
  json::object ctx;
  ctx["messages"] = c.at("messages");
  ctx["tools"] = c.contains("tools") ? c.at("tools") : json::value(nullptr);
  ctx["add_generation_prompt"] = c.at("add_generation_prompt");
  for (const char* key : {"bos_token", "eos_token"}) {
    if (tokens.contains(key) && !tokens.at(key).is_null()) ctx[key] = tokens.at(key);
  }
  return ctx;
}

// First differing byte, with a little context on each side, for a readable failure.
std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  size_t from = i > 40 ? i - 40 : 0;
  return "first difference at byte " + std::to_string(i) + "\n  jinja2: " +
         json::serialize(json::string(want.substr(from, 80))) + "\n  ours:   " +
         json::serialize(json::string(got.substr(from, 80)));
}

TEST(ChatTemplateVsJinja2, EveryTemplateEveryMessageList) {
  ASSERT_TRUE(fs::exists(g_oracle_path))
      << "no oracle output at " << g_oracle_path
      << ": the chat_template_oracle fixture did not run or failed. It needs /usr/bin/python3 "
         "with jinja2: run scripts/setup.sh";
  json::object oracle = json::parse(read_file(g_oracle_path)).as_object();
  json::array cases = json::parse(read_file(g_messages_path)).as_array();
  ASSERT_GE(cases.size(), 50u);
  size_t n_templates = 0, n_compared = 0;
  for (const auto& entry : fs::directory_iterator(g_templates_dir)) {
    if (entry.path().extension() != ".jinja") continue;
    std::string name = entry.path().stem().string();
    ++n_templates;
    ASSERT_TRUE(oracle.contains(name)) << "oracle has no results for template " << name;
    const json::object& expected = oracle.at(name).as_object();
    fs::path tokens_path = entry.path().parent_path() / (name + ".tokens.json");
    json::object tokens;
    if (fs::exists(tokens_path)) tokens = json::parse(read_file(tokens_path)).as_object();
    std::unique_ptr<dpa::text::ChatTemplate> tpl;
    try {
      tpl = dpa::text::ChatTemplate::parse(read_file(entry.path()));
    } catch (const dpa::Error& e) {
      ADD_FAILURE() << name << ": parse failed: " << e.what();
      continue;
    }
    for (const auto& cv : cases) {
      const json::object& c = cv.as_object();
      std::string case_name(c.at("name").as_string());
      SCOPED_TRACE(name + " x " + case_name);
      const json::object& want = expected.at(case_name).as_object();
      ++n_compared;
      std::string got;
      try {
        got = tpl->render(make_context(c, tokens));
      } catch (const dpa::Error& e) {
        if (want.contains("text")) {
          ADD_FAILURE() << "renderer threw but jinja2 rendered: " << e.what();
        } else if (want.at("raised").as_bool()) {
          EXPECT_EQ(std::string(e.what()), std::string(want.at("error").as_string()));
        }
        continue;
      }
      if (!want.contains("text")) {
        ADD_FAILURE() << "jinja2 failed (" << want.at("error").as_string()
                      << ") but the renderer gave: " << json::serialize(json::string(got));
        continue;
      }
      std::string text(want.at("text").as_string());
      EXPECT_TRUE(text == got) << first_difference(text, got);
    }
  }
  EXPECT_GE(n_templates, 9u);
  std::printf("compared %zu renders of %zu templates with jinja2\n", n_compared, n_templates);
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s TEMPLATES_DIR MESSAGES.json ORACLE.json\n", argv[0]);
    return 2;
  }
  g_templates_dir = argv[1];
  g_messages_path = argv[2];
  g_oracle_path = argv[3];
  return RUN_ALL_TESTS();
}
