// shoald: one shoal node. With no arguments, a standalone node with every
// role and the example models on tcp://127.0.0.1:5555, metrics on
// http://127.0.0.1:9310/metrics.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "config/config.hpp"
#include "net/error.hpp"
#include "runtime/log.hpp"
#include "runtime/model_repository.hpp"
#include "runtime/node.hpp"

int main(int argc, char** argv) {
  CLI::App app{"shoald: a shoal node (actor-based model serving)"};
  std::string config_file;
  std::string role;
  std::string join;
  std::vector<std::string> sets;
  bool print_config = false;
  bool check_config = false;
  app.add_option("--config", config_file, "TOML config file")
      ->envname("SHOAL_CONFIG");
  app.add_option("--role", role, "head, worker or all (default: all)");
  app.add_option("--join", join, "head endpoint to join (cluster mode)");
  app.add_option("--set", sets,
                 "override one setting, e.g. --set gateway.endpoint=tcp://"
                 "127.0.0.1:6000 (repeatable)");
  app.add_flag("--print-config", print_config,
               "print the effective configuration and exit");
  app.add_flag("--check-config", check_config,
               "validate the configuration and model repository, then exit");
  CLI11_PARSE(app, argc, argv);

  auto cfg = shoal::load_config(config_file);
  if (!cfg) {
    std::cerr << "shoald: " << shoal::reason_of(cfg.error()) << "\n";
    return 2;
  }
  if (!role.empty())
    cfg->node.role = role;
  if (!join.empty()) {
    cfg->cluster.join = join;
    if (role.empty())
      cfg->node.role = "worker";
  }
  for (auto& kv : sets) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      std::cerr << "shoald: --set " << kv << ": expected KEY=VALUE\n";
      return 2;
    }
    if (auto err = shoal::set_config_value(*cfg, kv.substr(0, eq),
                                           kv.substr(eq + 1), "--set")) {
      std::cerr << "shoald: " << shoal::reason_of(err) << "\n";
      return 2;
    }
  }
  if (auto err = shoal::validate(*cfg)) {
    std::cerr << "shoald: " << shoal::reason_of(err) << "\n";
    return 2;
  }
  if (print_config) {
    std::cout << shoal::render_config(*cfg);
    return 0;
  }
  if (auto err = shoal::init_logging(cfg->log.level, cfg->node.name)) {
    std::cerr << "shoald: " << shoal::reason_of(err) << "\n";
    return 2;
  }
  if (check_config) {
    // Starts nothing, but reads every manifest (fetching them from a
    // remote repository).
    auto catalog = shoal::open_repository(shoal::store_config_of(*cfg));
    if (!catalog) {
      std::cerr << "shoald: " << shoal::reason_of(catalog.error()) << "\n";
      return 2;
    }
    std::cout << "configuration OK: " << (*catalog)->models.size()
              << " model(s) in " << cfg->models.root << "\n";
    return 0;
  }
  shoal::block_signals();
  auto n = shoal::node::start(*cfg);
  if (!n) {
    spdlog::error("cannot start: {}", shoal::reason_of(n.error()));
    return 1;
  }
  return (*n)->run();
}
