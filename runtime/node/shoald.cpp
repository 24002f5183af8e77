#include "runtime/node/shoald.hpp"

#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "config/config.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"
#include "runtime/node/log.hpp"
#include "runtime/node/node.hpp"
#include "runtime/node/node_security.hpp"

namespace shoal {

namespace {

struct command_line {
  std::vector<std::string> config_files;
  std::string role;
  std::string join;
  std::vector<std::string> sets;
  bool print_config = false;
  bool check_config = false;
};

void declare_options(CLI::App& app, command_line& cl) {
  app.add_option("--config", cl.config_files,
                 "TOML config file; repeat to layer them, later files "
                 "overriding earlier ones (a base, then an environment's)")
      ->envname("SHOAL_CONFIG");
  app.add_option("--role", cl.role, "head, worker or all (default: all)");
  app.add_option("--join", cl.join, "head endpoint to join (cluster mode)");
  app.add_option("--set", cl.sets,
                 "override one setting, e.g. --set gateway.endpoint=tcp://"
                 "127.0.0.1:6000 (repeatable)");
  app.add_flag("--print-config", cl.print_config,
               "print the effective configuration and exit");
  app.add_flag("--check-config", cl.check_config,
               "validate the configuration and model repository, then exit");
}

// The configuration from the file, the environment, --role, --join and
// every --set, in that order, validated.
caf::expected<node_config> configuration(const command_line& cl) {
  auto cfg = load_config(cl.config_files);
  if (!cfg) {
    return cfg.error();
  }
  // --role and --join are --set with names of their own.
  std::vector<std::pair<std::string, std::string>> flags;
  if (!cl.role.empty()) {
    flags.emplace_back("node.role", cl.role);
  }
  if (!cl.join.empty()) {
    flags.emplace_back("cluster.join", cl.join);
    if (cl.role.empty()) {
      flags.emplace_back("node.role", "worker");
    }
  }
  for (auto& [key, value] : flags) {
    auto origin =
        key == "cluster.join" || cl.role.empty() ? "--join" : "--role";
    if (auto err = set_config_value(*cfg, key, value, origin)) {
      return err;
    }
  }
  for (auto& kv : cl.sets) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      return make_error(errc::config_invalid,
                        "--set " + kv + ": expected KEY=VALUE");
    }
    if (auto err = set_config_value(*cfg, kv.substr(0, eq), kv.substr(eq + 1),
                                    "--set")) {
      return err;
    }
  }
  if (auto err = validate(*cfg)) {
    return err;
  }
  return cfg;
}

// Starts nothing and binds nothing, but reads every file that starting
// would read (the key, clients, secret and workers files, every manifest,
// fetching them from a remote repository), so that "configuration OK"
// means the node gets past reading its configuration.
int check_config(const node_config& cfg) {
  if (auto err = check_security_files(cfg)) {
    std::cerr << "shoald: " << reason_of(err) << "\n";
    return 2;
  }
  auto catalog = open_repository(store_config_of(cfg));
  if (!catalog) {
    std::cerr << "shoald: " << reason_of(catalog.error()) << "\n";
    return 2;
  }
  std::cout << "configuration OK: " << (*catalog)->models.size()
            << " model(s) in " << cfg.models.root << "\n";
  return 0;
}

} // namespace

int shoald_main(int argc, char** argv) {
  CLI::App app{"shoald: a shoal node (actor-based model serving)"};
  command_line cl;
  declare_options(app, cl);
  CLI11_PARSE(app, argc, argv);
  auto cfg = configuration(cl);
  if (!cfg) {
    std::cerr << "shoald: " << reason_of(cfg.error()) << "\n";
    return 2;
  }
  if (cl.print_config) {
    std::cout << render_config(*cfg, true);
    return 0;
  }
  if (auto err = init_logging(cfg->log.level, cfg->node.name)) {
    std::cerr << "shoald: " << reason_of(err) << "\n";
    return 2;
  }
  if (cl.check_config) {
    return check_config(*cfg);
  }
  block_signals();
  auto n = node::start(*cfg);
  if (!n) {
    spdlog::error("cannot start: {}", reason_of(n.error()));
    return 1;
  }
  return (*n)->run();
}

} // namespace shoal
