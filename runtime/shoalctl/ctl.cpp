#include "runtime/shoalctl/ctl.hpp"

#include <iostream>

#include "net/security/curve_keys.hpp"
#include "net/wire/error.hpp"

namespace shoal::ctl {

bool set_curve_options(const global_options& g, client_options& opts) {
  if (g.server_public_key.empty() && g.client_key.empty()) {
    return true;
  }
  if (g.server_public_key.empty() || g.client_key.empty()) {
    std::cerr << "error: CURVE needs both --server-public-key and "
                 "--client-key\n";
    return false;
  }
  auto server = read_public_key(g.server_public_key, "--server-public-key");
  if (!server) {
    std::cerr << "error: " << reason_of(server.error()) << '\n';
    return false;
  }
  auto pair = read_secret_key(g.client_key, "--client-key");
  if (!pair) {
    std::cerr << "error: " << reason_of(pair.error()) << '\n';
    return false;
  }
  opts.curve = true;
  opts.server_public_key = *server;
  opts.public_key = pair->public_key;
  opts.secret_key = pair->secret_key;
  return true;
}

std::unique_ptr<client> open_client(const global_options& g, int& rc) {
  client_options opts;
  opts.endpoint = g.endpoint;
  opts.timeout = std::chrono::milliseconds{g.timeout_ms};
  opts.retries = g.retries;
  if (!set_curve_options(g, opts)) {
    rc = exit_usage;
    return nullptr;
  }
  auto c = client::connect(opts);
  if (!c) {
    std::cerr << "error: " << reason_of(c.error()) << '\n';
    rc = exit_usage;
    return nullptr;
  }
  return std::move(*c);
}

int report_client_error(const caf::error& err) {
  std::cerr << "error: " << reason_of(err) << '\n';
  return to_status(err) == status::deadline_exceeded ? exit_no_reply
                                                     : exit_status;
}

int report_status(const reply& rep) {
  if (rep.code == status::ok) {
    return exit_ok;
  }
  std::cerr << "error: " << to_string(rep.code) << ": "
            << (rep.error.empty() ? "(no reason given)" : rep.error) << '\n';
  return exit_status;
}

std::optional<model_info> find_model(client& c, const std::string& name,
                                     int& rc) {
  request req;
  req.op = op_kind::models;
  auto rep = c.call(std::move(req));
  if (!rep) {
    rc = report_client_error(rep.error());
    return std::nullopt;
  }
  if (rep->code != status::ok) {
    rc = report_status(*rep);
    return std::nullopt;
  }
  for (auto& m : rep->models) {
    if (m.name == name) {
      return m;
    }
  }
  std::cerr << "error: NOT_FOUND: unknown model '" << name << "'";
  if (!rep->models.empty()) {
    std::cerr << " (known:";
    for (auto& m : rep->models) {
      std::cerr << ' ' << m.name;
    }
    std::cerr << ')';
  }
  std::cerr << '\n';
  rc = exit_status;
  return std::nullopt;
}

} // namespace shoal::ctl
