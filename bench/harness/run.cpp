#include "bench/harness/run.hpp"

#include <csignal>
#include <cstdio>

#include "tests/support/process.hpp"

namespace shoal::bench {

namespace {

volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_interrupt(int) {
  g_interrupted = 1;
}

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    ::sigaction(sig, &sa, nullptr);
  }
}

} // namespace

bool interrupted() {
  return g_interrupted != 0;
}

void check_interrupted() {
  if (interrupted()) {
    throw bench_error{"interrupted"};
  }
}

int run_guarded(const std::string& name, const std::function<int()>& body,
                const std::string& hint) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: FAILED: %s\n%s", name.c_str(),
                 interrupted() ? "interrupted" : e.what(), hint.c_str());
    if (!hint.empty() && hint.back() != '\n') {
      std::fputc('\n', stderr);
    }
    return interrupted() ? 130 : 1;
  }
}

int run_main(const std::string& name, const std::function<int()>& body,
             const std::string& hint) {
  std::signal(SIGPIPE, SIG_IGN);
  install_interrupt_handlers();
  shoal::test::set_wait_check(&check_interrupted);
  return run_guarded(name, body, hint);
}

} // namespace shoal::bench
