// What every shoalctl subcommand shares: the global options, the exit
// codes, and talking to the gateway with errors reported the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "net/client/client.hpp"

namespace shoal::ctl {

// Exit codes: 0 OK, 1 a non-OK status (or an unknown model), 2 a usage
// error, 3 no reply within the timeout.
constexpr int exit_ok = 0;
constexpr int exit_status = 1;
constexpr int exit_usage = 2;
constexpr int exit_no_reply = 3;

struct global_options {
  std::string endpoint = "tcp://127.0.0.1:5555";
  int64_t timeout_ms = 5000;
  int retries = 0;
  bool json = false;
  // CURVE: the gateway's public key and this client's secret key, each a
  // file or 40 Z85 characters.
  std::string server_public_key;
  std::string client_key;
};

// A client connected to the gateway; null (with the reason printed and `rc`
// set) when the options are unusable.
std::unique_ptr<client> open_client(const global_options& g, int& rc);

// Sets the CURVE keys of `opts` from --server-public-key and --client-key;
// false (having said why) when they are unusable.
bool set_curve_options(const global_options& g, client_options& opts);

// Prints why no reply came and returns the exit code for it.
int report_client_error(const caf::error& err);

// Prints a non-OK status with its reason; the exit code for the reply.
int report_status(const reply& rep);

// Asks the gateway for its models and picks `name`; prints why not and sets
// `rc` when that fails.
std::optional<model_info> find_model(client& c, const std::string& name,
                                     int& rc);

} // namespace shoal::ctl
