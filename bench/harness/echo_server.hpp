// The baseline of the end-to-end benchmarks: a raw ZeroMQ ROUTER on loopback
// that sends every [identity, payload] straight back, in a process of its
// own, so that it pays the same process, socket and thread costs as a node.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "tests/support/process.hpp"

namespace shoal::bench {

struct echo_server {
  std::unique_ptr<shoal::test::child_process> proc;
  std::string endpoint; // tcp://127.0.0.1:PORT
};

// Forks the echo server (this binary, no exec). Must run before this
// process starts any thread. With `curve_secret`, a CURVE server with that
// key (any client key accepted: no ZAP handler).
echo_server start_echo_server(
    std::optional<std::array<uint8_t, 32>> curve_secret = std::nullopt);

} // namespace shoal::bench
