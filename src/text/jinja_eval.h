// Evaluator: renders a parsed chat template against a JSON context.
#pragma once

#include <boost/json.hpp>
#include <string>

#include "text/jinja_ast.h"

namespace dpa::text::jinja {

// Throws TemplateError (a dpa::Error) with the message of raise_exception(), or with
// "chat template error at line L, column C: ..." for a runtime error.
std::string render(const Body& body, const boost::json::object& context);

}  // namespace dpa::text::jinja
