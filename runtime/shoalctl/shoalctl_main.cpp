// shoalctl: the operator and client tool. Every subcommand is one or a few
// protocol v1 requests through the C++ client (runtime/shoalctl/
// commands.hpp lists them).
//
// Exit codes: 0 OK, 1 a non-OK status (or an unknown model), 2 a usage
// error, 3 no reply within the timeout.
#include <iostream>

#include <CLI/CLI.hpp>

#include "runtime/shoalctl/commands.hpp"

using namespace shoal::ctl;

namespace {

void add_global_options(CLI::App& app, global_options& g) {
  app.add_option("--endpoint", g.endpoint, "gateway endpoint")
      ->envname("SHOAL_ENDPOINT")
      ->capture_default_str();
  app.add_option("--timeout-ms", g.timeout_ms,
                 "how long to wait for each reply")
      ->check(CLI::Range(int64_t{1}, int64_t{24} * 3600 * 1000))
      ->capture_default_str();
  app.add_option("--retries", g.retries,
                 "resends of a request (same id) after a timeout; not bench")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_flag("--json", g.json, "machine-readable output");
  app.add_option("--server-public-key", g.server_public_key,
                 "CURVE: the gateway's public key (a .pub file or Z85)")
      ->envname("SHOAL_SERVER_PUBLIC_KEY");
  app.add_option("--client-key", g.client_key,
                 "CURVE: this client's secret key (a .key file or Z85)")
      ->envname("SHOAL_CLIENT_KEY");
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoalctl: operator and client tool for a shoal cluster "
               "(protocol v1)"};
  // At most one; "none" is reported below with the help text, and leaving
  // the minimum out lets CLI11 name a misspelled subcommand.
  app.require_subcommand(0, 1);
  app.fallthrough();
  app.footer("Exit codes: 0 OK, 1 non-OK status or unknown model, 2 usage "
             "error, 3 no reply within --timeout-ms.");
  global_options g;
  add_global_options(app, g);
  int rc = -1;
  add_commands(app, g, rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    auto code = app.exit(e);
    return code == 0 ? exit_ok : exit_usage;
  } catch (const std::exception& e) {
    // ZeroMQ or allocation failures: say what happened instead of aborting.
    std::cerr << "error: " << e.what() << '\n';
    return exit_status;
  }
  if (rc >= 0) {
    return rc;
  }
  std::cerr << "error: a subcommand is required\n\n" << app.help();
  return exit_usage;
}
