// The chaos tests' names for the process cluster of tests/support, which the
// cluster benchmark drives too.
#pragma once

#include "tests/support/cluster.hpp"
#include "tests/support/process.hpp"

namespace shoal::chaos {

using node_process = shoal::test::cluster_node;
using shoal::test::cluster;
using shoal::test::cluster_options;
using shoal::test::free_port;
using shoal::test::http_get;
using shoal::test::sample;

} // namespace shoal::chaos
