// Prometheus HTTP service discovery (/sd on a head): the JSON list of every
// live node's metrics target with its name, role and labels, so that a
// Prometheus server follows the cluster as it scales.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace shoal {

struct sd_target {
  std::string target; // HOST:PORT of its /metrics
  std::string node;
  std::string role; // head or worker
  std::vector<std::pair<std::string, std::string>> labels;
  // The Kubernetes namespace, as label `namespace` (what autoscalers
  // select on); empty outside Kubernetes: no label.
  std::string k8s_namespace;
};

// The body of /sd: one target group per node. A node label k becomes
// `label_k` (characters other than letters and digits turned into '_').
std::string render_service_discovery(const std::vector<sd_target>& targets);

} // namespace shoal
