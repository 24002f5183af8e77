// shoalctl's job commands: submit, job, wait (a progress bar on a
// terminal), cancel and jobs.
#pragma once

#include <CLI/CLI.hpp>

#include "runtime/shoalctl/ctl.hpp"

namespace shoal::ctl {

void add_job_commands(CLI::App& app, const global_options& g, int& rc);

} // namespace shoal::ctl
