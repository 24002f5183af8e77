// How a benchmark's main() runs: errors that end the run, and interruption.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

namespace shoal::bench {

// Something broke (not a missed target): the run ends non-zero.
struct bench_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// True once SIGINT, SIGTERM or SIGHUP arrived (after run_main installed its
// handlers).
bool interrupted();

// Throws bench_error once interrupted: long loops call it, so that the stack
// unwinds through the destructors that stop the child processes.
void check_interrupted();

// Runs `body`; returns its exit status, or 1 after an exception, printed as
// "NAME: FAILED: what" followed by `hint` (when not empty).
int run_guarded(const std::string& name, const std::function<int()>& body,
                const std::string& hint = {});

// run_guarded() with SIGPIPE ignored and interrupt handlers installed
// without SA_RESTART: a blocked ZeroMQ call fails with EINTR, loops check
// the flag, the bounded waits of tests/support too, and the run ends with
// 130. Install nothing that forks before this: children reset the handlers.
int run_main(const std::string& name, const std::function<int()>& body,
             const std::string& hint = {});

} // namespace shoal::bench
