// The shoalctl subcommands. Each one declares its options on the command
// line parser and, when it is the one given, runs and leaves its exit code.
#pragma once

#include <CLI/CLI.hpp>

#include "runtime/shoalctl/ctl.hpp"

namespace shoal::ctl {

// Adds every subcommand to `app`. After a successful parse the chosen
// one's callback has run and stored its exit code in `rc`; `g` is read
// when the callback runs, so the global options may follow the
// subcommand.
void add_commands(CLI::App& app, const global_options& g, int& rc);

} // namespace shoal::ctl
