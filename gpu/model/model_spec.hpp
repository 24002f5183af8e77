// What a model.toml declares. Parsed by the model repository; read by the
// router (validation, batching, cache settings) and the backends.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/wire/message.hpp"

namespace shoal {

struct synthetic_params {
  uint64_t cost_per_batch_us = 0; // simulated compute, per batch
  uint64_t cost_per_item_us = 0;  // and per request in the batch
  double scale = 2.0;             // outputs = scale * input + offset
  double offset = 1.0;
  uint64_t crash_after_batches = 0; // fault hook: 0 = never
  uint64_t load_ms = 0;             // simulated model load time
};

// One layer of a sequential graph (docs/model_format.md).
struct layer_spec {
  std::string op;     // dense, relu, gelu, softmax, layernorm, conv2d,
                      // max_pool2d, avg_pool2d, flatten, add
  std::string weight; // tensor names in the weights file
  std::string bias;
  std::string save; // keep the output under this name
  std::string from; // add: the saved operand
  std::vector<uint64_t> kernel, stride, padding, dilation; // [h, w]
  double eps = 1e-5;
};

struct model_spec {
  std::string name;
  uint64_t version = 0;
  std::string dir; // local directory the backend loads from
  // Remote repository only: URL of the version directory; files are
  // fetched from here into `dir` (<models.cache_dir>/<name>/<version>).
  std::string source;
  // "synthetic", or "cpu" / "cuda": the same layer graph, preferring the
  // CPU or a GPU (resources.device decides where it may run).
  std::string backend;
  std::vector<io_spec> inputs;
  std::vector<io_spec> outputs;
  uint32_t max_batch = 1;
  std::chrono::microseconds max_delay{0};
  bool cache_enabled = true;
  std::chrono::milliseconds cache_ttl{0}; // 0: the node default
  bool pinned = false;                    // never retired when idle
  std::optional<std::chrono::milliseconds> idle_ttl;
  std::optional<uint64_t> queue_capacity;
  synthetic_params synthetic;
  std::string weights_file; // relative to dir
  // File name -> sha256 (hex) of every file the model needs.
  std::vector<std::pair<std::string, std::string>> files;
  std::string device = "cpu"; // cpu, gpu or any
  // cuda: f32 dense and conv layers may use TF32 tensor cores (10-bit
  // mantissa products, about 1e-3 relative), as torch's allow_tf32.
  bool allow_tf32 = false;
  uint64_t memory_bytes = 0;
  // Cluster placement: keep at least this many of the model's replicas on
  // workers labelled capacity=on-demand (spot nodes may vanish at once).
  uint64_t min_replicas_on_demand = 0;
  std::vector<layer_spec> layers;
};

using model_spec_ptr = std::shared_ptr<const model_spec>;

// Every version of every model found under the repository root, immutable
// once built: readers on any thread share it without locks.
struct model_catalog {
  // name -> version -> spec
  std::map<std::string, std::map<uint64_t, model_spec_ptr>> models;

  // The spec for a request: the named version, or the newest one.
  model_spec_ptr resolve(const std::string& name,
                         std::optional<uint64_t> version) const {
    auto i = models.find(name);
    if (i == models.end() || i->second.empty())
      return nullptr;
    if (!version)
      return i->second.rbegin()->second;
    auto j = i->second.find(*version);
    return j == i->second.end() ? nullptr : j->second;
  }
};

using model_catalog_ptr = std::shared_ptr<const model_catalog>;

} // namespace shoal
