// Constructors of the subcommand table entries, one file each.
#pragma once

#include "app/cli.h"

namespace dpa::app {

Command info_command();
Command batch_command();
Command bench_command();
// The OpenAI-compatible HTTP server on rank 0 (cmd_serve.cpp).
Command serve_command();
// Writes a random checkpoint of a preset shape (src/model/make_model.h).
Command make_model_command();

}  // namespace dpa::app
