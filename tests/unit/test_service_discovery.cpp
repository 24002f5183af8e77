// /sd: Prometheus HTTP service discovery as the head renders it.
#include <gtest/gtest.h>

#include "runtime/node/service_discovery.hpp"

using namespace shoal;

TEST(service_discovery, one_group_per_node_with_role_and_labels) {
  std::vector<sd_target> targets{
      {"127.0.0.1:9310", "head", "head", {}},
      {"10.0.0.7:9310",
       "w1",
       "worker",
       {{"capacity", "spot"}, {"gpu.kind", "h100"}}},
  };
  EXPECT_EQ(render_service_discovery(targets),
            "[{\"targets\":[\"127.0.0.1:9310\"],\"labels\":{\"node\":\"head\","
            "\"role\":\"head\"}},"
            "{\"targets\":[\"10.0.0.7:9310\"],\"labels\":{\"node\":\"w1\","
            "\"role\":\"worker\",\"label_capacity\":\"spot\","
            "\"label_gpu_kind\":\"h100\"}}]\n");
}

TEST(service_discovery, quotes_and_control_characters_cannot_break_the_json) {
  std::vector<sd_target> targets{
      {"h:1", "we\"ird\\name\n", "worker", {{"k", "v\"\x01"}}},
  };
  EXPECT_EQ(
      render_service_discovery(targets),
      "[{\"targets\":[\"h:1\"],\"labels\":{\"node\":\"we\\\"ird\\\\name\","
      "\"role\":\"worker\",\"label_k\":\"v\\\"\"}}]\n");
}

// On Kubernetes the targets carry the namespace, which the autoscaling
// queries select on.
TEST(service_discovery, a_namespace_becomes_a_label) {
  std::vector<sd_target> targets{
      {"10.0.0.7:9310", "w1", "worker", {}, "shoal-staging"},
  };
  EXPECT_EQ(render_service_discovery(targets),
            "[{\"targets\":[\"10.0.0.7:9310\"],\"labels\":{\"node\":\"w1\","
            "\"role\":\"worker\",\"namespace\":\"shoal-staging\"}}]\n");
}

TEST(service_discovery, no_nodes_is_an_empty_list) {
  EXPECT_EQ(render_service_discovery({}), "[]\n");
}
