// Constructors of the subcommand table entries, one file each.
#pragma once

#include "app/cli.h"

namespace dpa::app {

Command info_command();
Command batch_command();
Command bench_command();
// Writes a random checkpoint of a preset shape (src/model/make_model.h).
Command make_model_command();
// A command whose implementation has not landed yet: says so clearly and exits non-zero.
Command not_yet_command(std::string name, std::string summary, std::string needs);

}  // namespace dpa::app
