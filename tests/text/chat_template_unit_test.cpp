// Chat template errors: syntax errors name their line and column, raise_exception() surfaces its
// exact message as dpa::Error, runtime type errors name their position.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "core/error.h"
#include "text/chat_template.h"

namespace {

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

using dpa::text::ChatTemplate;

// The message of the dpa::Error that parsing `source` throws ("" when it parses).
std::string parse_error(const std::string& source) {
  try {
    ChatTemplate::parse(source);
  } catch (const dpa::Error& e) {
    return e.what();
  }
  return "";
}

std::string render_error(const std::string& source, const boost::json::object& ctx) {
  auto tpl = ChatTemplate::parse(source);
  try {
    tpl->render(ctx);
  } catch (const dpa::Error& e) {
    return e.what();
  }
  return "";
}

struct SyntaxCase {
  const char* source;
  const char* position;  // "line L, column C"
  const char* detail;    // a piece of the message
};

TEST(ChatTemplateSyntax, ErrorsNameLineAndColumn) {
  const SyntaxCase cases[] = {
      {"{% if x %}abc", "line 1, column 4", "never closed"},
      {"Hello\n{{ 1 + }}", "line 2, column 8", "expected an expression"},
      {"ok\n  {% endfor %}", "line 2, column 6", "unexpected 'endfor'"},
      {"{{ 'abc }}", "line 1, column 4", "unterminated string"},
      {"a\nb\n{% frobnicate %}", "line 3, column 4", "unknown statement 'frobnicate'"},
      {"{{ x", "line 1, column 5", "missing '}}'"},
      {"text {# never closed", "line 1, column 6", "unterminated comment"},
      {"{% for x in %}{% endfor %}", "line 1, column 13", "expected an expression"},
      {"{% for x in xs %}{% else %}{% endif %}", "line 1, column 31", "unexpected 'endif'"},
      {"{{ [1, 2 }}", "line 1, column 10", "unexpected '}', expected ']'"},
      {"{{ (1 + 2 }}", "line 1, column 11", "unexpected '}', expected ')'"},
      {"{{ x | }}", "line 1, column 8", "expected a filter name"},
      {"{% set = 3 %}", "line 1, column 8", "expected a variable name"},
      {"{{ a $ b }}", "line 1, column 6", "unexpected character '$'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.source);
    std::string message = parse_error(c.source);
    EXPECT_NE(message.find("syntax error"), std::string::npos) << message;
    EXPECT_NE(message.find(c.position), std::string::npos) << message;
    EXPECT_NE(message.find(c.detail), std::string::npos) << message;
  }
}

TEST(ChatTemplateSyntax, ValidTemplatesParse) {
  EXPECT_EQ(parse_error("{{ {'a': {'b': 1}} }}"), "");  // `}}` inside a dict literal
  EXPECT_EQ(parse_error("{{ '%}' ~ \"}}\" }}{% if '{%' %}{% endif %}"), "");
  EXPECT_EQ(parse_error("{%- for a, b in x.items() if a -%}{% break %}{% else %}{%+ endfor %}"), "");
}

TEST(ChatTemplateRaise, RaiseExceptionGivesItsMessage) {
  const std::string source =
      "{%- for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
      "{{ raise_exception('Unsupported role: ' + m.role) }}{% endif %}{{ m.content }}{% endfor %}";
  boost::json::object ok = boost::json::parse(
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})")
      .as_object();
  EXPECT_EQ(ChatTemplate::parse(source)->render(ok), "ab");
  boost::json::object bad = boost::json::parse(
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]})")
      .as_object();
  EXPECT_EQ(render_error(source, bad), "Unsupported role: tool");
}

TEST(ChatTemplateRaise, RaiseInsideMacroAndBlocks) {
  const std::string source =
      "{% macro check(x) %}{% if x > 2 %}{{ raise_exception('too big: ' ~ x) }}{% endif %}ok{% endmacro %}"
      "{% for i in range(5) %}{{ check(i) }}{% endfor %}";
  EXPECT_EQ(render_error(source, {}), "too big: 3");
}

TEST(ChatTemplateRuntime, TypeErrorsNamePosition) {
  std::string message = render_error("line\n{{ 'a' + 1 }}", {});
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
  EXPECT_NE(message.find("unsupported operand"), std::string::npos) << message;
  message = render_error("{{ missing.attr }}", {});
  EXPECT_NE(message.find("'missing' is undefined"), std::string::npos) << message;
  message = render_error("{% set x = 1 %}{% set x.y = 2 %}", {});
  EXPECT_NE(message.find("not a namespace"), std::string::npos) << message;
}

// Found by fuzz_chat_template: repetition of an empty sequence must not loop a huge count, and a
// template that keeps building large strings ends with an error (not minutes of work).
TEST(ChatTemplateRuntime, WorkIsBounded) {
  EXPECT_EQ(ChatTemplate::parse("[{{ '' * 1000000000000000 }}]")->render({}), "[]");
  EXPECT_EQ(ChatTemplate::parse("{{ ([] * 1000000000000000) | length }}")->render({}), "0");
  const std::string message =
      render_error("{% for i in range(1000) %}{% set s = 'x' * 1000000 %}{{ s ~ s }}{% endfor %}", {});
  EXPECT_NE(message.find("template builds more than"), std::string::npos) << message;
}

// Found by fuzz_chat_template: lists count what they hold, nested lists included, so repeating or
// doubling a list of lists cannot build gigabytes while its top level stays small.
TEST(ChatTemplateRuntime, IntegerPowersAreExactAndQuick) {
  // A linear loop took 2**63 steps for these (fuzz_chat_template timed out on them).
  EXPECT_EQ(ChatTemplate::parse("{{ (-1) ** 9223372036854775807 }}")->render({}), "-1");
  EXPECT_EQ(ChatTemplate::parse("{{ (-1) ** 9223372036854775806 }}")->render({}), "1");
  EXPECT_EQ(ChatTemplate::parse("{{ 1 ** 9223372036854775807 }} {{ 0 ** 9223372036854775807 }} {{ 5 ** 0 }}")->render({}),
            "1 0 1");
  EXPECT_EQ(ChatTemplate::parse("{{ 2 ** 62 }} {{ (-2) ** 63 }} {{ 3 ** 39 }}")->render({}),
            "4611686018427387904 -9223372036854775808 4052555153018976267");
  EXPECT_EQ(render_error("{{ 2 ** 63 }}", {}).find("integer overflow") != std::string::npos, true);
  EXPECT_EQ(render_error("{{ 3 ** 41 }}", {}).find("integer overflow") != std::string::npos, true);
}

TEST(ChatTemplateRuntime, NestedListsAreBounded) {
  std::string message = render_error("{{ [1, [2] * 90022] * 9000 }}", {});
  EXPECT_NE(message.find("sequence repetition builds more than"), std::string::npos) << message;
  message = render_error(
      "{% set ns = namespace(x=[1]) %}{% for i in range(64) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}", {});
  EXPECT_NE(message.find("template builds more than"), std::string::npos) << message;
  message = render_error(
      "{% set ns = namespace(x=[1]) %}{% for i in range(64) %}{% set ns.x = [ns.x] + [ns.x] %}{% endfor %}", {});
  EXPECT_NE(message.find("template builds more than"), std::string::npos) << message;
  message = render_error(
      "{% set ns = namespace(x={}) %}{% for i in range(64) %}{% set ns.x = {'a': ns.x, 'b': ns.x} %}{% endfor %}", {});
  EXPECT_NE(message.find("template builds more than"), std::string::npos) << message;
  // Small nested lists still repeat and concatenate.
  EXPECT_EQ(ChatTemplate::parse("{{ ([[1, 2]] * 3 + [[3]]) | length }}")->render({}), "4");
}

// Nesting is bounded at parse time, so a hostile template cannot exhaust the parser's or the
// evaluator's stack; the nesting of real templates stays far below the bound.
TEST(ChatTemplateSyntax, NestingIsBounded) {
  const int deep = 100000;
  for (const std::string& t : {"{{ " + std::string(deep, '(') + "1" + std::string(deep, ')') + " }}",
                               "{{ " + std::string(deep, '-') + "1 }}", "{{ " + repeat("not ", deep) + "1 }}",
                               "{{ " + std::string(deep, '[') + std::string(deep, ']') + " }}",
                               repeat("{% if true %}", deep) + repeat("{% endif %}", deep)}) {
    try {
      ChatTemplate::parse(t);
      ADD_FAILURE() << "a template nested " << deep << " deep was accepted";
    } catch (const dpa::Error& e) {
      EXPECT_NE(std::string(e.what()).find("nests deeper than"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(ChatTemplate::parse("{{ " + std::string(20, '(') + "1 + 2" + std::string(20, ')') + " }}")->render({}), "3");
  EXPECT_EQ(ChatTemplate::parse(repeat("{% if true %}", 30) + "x" + repeat("{% endif %}", 30))->render({}), "x");
}

}  // namespace
