// What a model.toml declares. Parsed by the model repository; read by the
// router (validation, batching, cache settings) and the backends.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <caf/expected.hpp>

#include "net/wire/error.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// A backend's own manifest settings, as its section parser read them
// (gpu/registry.hpp): each backend derives its options from this, so that
// a new backend adds a type of its own instead of fields to model_spec.
struct backend_options {
  virtual ~backend_options() = default;
};

using backend_options_ptr = std::shared_ptr<const backend_options>;

struct model_spec {
  std::string name;
  uint64_t version = 0;
  std::string dir; // local directory the backend loads from
  // Remote repository only: URL of the version directory; files are
  // fetched from here into `dir` (<models.cache_dir>/<name>/<version>).
  std::string source;
  // The registered backend that runs it (gpu/registry.hpp): "synthetic",
  // "cpu", "cuda", ...
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
  // File name -> sha256 (hex) of every file the model needs.
  std::vector<std::pair<std::string, std::string>> files;
  std::string device = "cpu"; // cpu, gpu or any
  uint64_t memory_bytes = 0;
  // Cluster placement: keep at least this many of the model's replicas on
  // workers labelled capacity=on-demand (spot nodes may vanish at once).
  uint64_t min_replicas_on_demand = 0;
  // sha256 of the model.toml this spec was read from: a re-read of the
  // repository tells an unchanged version from a changed one by it.
  std::string manifest_sha256;
  // What the backend's own sections said ([synthetic], [[layers]], ...);
  // null for a spec built in code. Read with options_of<T>().
  backend_options_ptr options;
};

// The spec's backend options as the backend's own type T. A spec built in
// code without options gets T's defaults; options of another type
// (another backend's) are an errc::unavailable error naming the file.
template <class T>
caf::expected<const T*> options_of(const model_spec& spec) {
  static_assert(std::is_base_of_v<backend_options, T>);
  if (!spec.options) {
    static const T defaults{};
    return &defaults;
  }
  if (auto* p = dynamic_cast<const T*>(spec.options.get())) {
    return p;
  }
  return make_error(errc::unavailable,
                    spec.dir + "/model.toml: backend '" + spec.backend +
                        "' was given the options of another backend");
}

// Changes a spec's options of type T (a copy: options are shared between
// copies of a spec), for programs that adjust a parsed manifest, such as
// benchmarks and tests. Options of another type are replaced by T's
// defaults before `edit` runs.
template <class T, class Edit>
void edit_options(model_spec& spec, Edit&& edit) {
  static_assert(std::is_base_of_v<backend_options, T>);
  auto* cur = dynamic_cast<const T*>(spec.options.get());
  auto copy =
      cur != nullptr ? std::make_shared<T>(*cur) : std::make_shared<T>();
  edit(*copy);
  spec.options = std::move(copy);
}

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
    if (i == models.end() || i->second.empty()) {
      return nullptr;
    }
    if (!version) {
      return i->second.rbegin()->second;
    }
    auto j = i->second.find(*version);
    return j == i->second.end() ? nullptr : j->second;
  }
};

using model_catalog_ptr = std::shared_ptr<const model_catalog>;

} // namespace shoal
