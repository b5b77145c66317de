// Parser: lexed segments to a statement tree; syntax errors carry line and column.
#pragma once

#include <string>

#include "text/jinja_ast.h"

namespace dpa::text::jinja {

// Throws dpa::Error "chat template syntax error at line L, column C: ..." on bad input.
Body parse_template(const std::string& source);

}  // namespace dpa::text::jinja
