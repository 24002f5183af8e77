// The data model of protocol v1: tensors, requests and replies as they travel
// between the gateway, the router, the cache and the executors.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal {

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;

enum class dtype : uint8_t {
  f32,
  f16,
  bf16,
  f64,
  i8,
  i16,
  i32,
  i64,
  u8,
  boolean
};

// Bytes per element.
size_t dtype_size(dtype t) noexcept;
std::string_view to_string(dtype t) noexcept;
std::optional<dtype> parse_dtype(std::string_view s) noexcept;

// Wire status codes (docs/protocol.md, "Status codes").
enum class status : uint8_t {
  ok,
  invalid_argument,
  not_found,
  resource_exhausted,
  deadline_exceeded,
  unavailable,
  unauthenticated,
  permission_denied,
  internal,
  cancelled,
};

std::string_view to_string(status s) noexcept;
std::optional<status> parse_status(std::string_view s) noexcept;

struct tensor {
  std::string name;
  dtype type = dtype::f32;
  std::vector<uint64_t> shape;
  // Little-endian, row-major, exactly prod(shape) * dtype_size(type) bytes.
  std::vector<uint8_t> data;

  // prod(shape), or nullopt on overflow.
  std::optional<uint64_t> element_count() const noexcept;
  friend bool operator==(const tensor&, const tensor&) = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tensor& x) {
  return f(x.name, x.type, x.shape, x.data);
}

// A request id is a uint64 or a string of at most 128 bytes, echoed verbatim.
struct request_id {
  enum class kind : uint8_t { nil, num, str };
  kind k = kind::nil;
  uint64_t num = 0;
  std::string str;

  static request_id of(uint64_t n) { return {kind::num, n, {}}; }
  static request_id of(std::string s) { return {kind::str, 0, std::move(s)}; }
  std::string to_string() const;
  friend bool operator==(const request_id&, const request_id&) = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_id& x) {
  return f(x.k, x.num, x.str);
}

enum class op_kind : uint8_t {
  infer,
  ping,
  models,
  status,
  load,
  unload,
  drain,
  reload,
  // Durable jobs (actors/jobs/job_manager.hpp).
  submit,
  job,
  wait,
  cancel,
  jobs
};

std::string_view to_string(op_kind o) noexcept;
std::optional<op_kind> parse_op(std::string_view s) noexcept;

enum class cache_mode : uint8_t { use, bypass, refresh };

std::string_view to_string(cache_mode m) noexcept;
std::optional<cache_mode> parse_cache_mode(std::string_view s) noexcept;

// A decoded, validated client request.
struct request {
  uint32_t v = 1;
  request_id id;
  op_kind op = op_kind::infer;
  std::string model;
  std::optional<uint64_t> version;
  std::vector<tensor> inputs;
  uint8_t priority = 5;
  std::optional<uint64_t> timeout_ms;
  cache_mode cache = cache_mode::use;
  std::string tenant;
  // `node` argument of the admin op `drain`.
  std::string node;
  // submit: the client's job id (empty: the node picks one); job, wait,
  // cancel: which job.
  std::string job;
  // Progress frames before the final reply: `progress` (wait) or `stream`
  // (any request).
  bool progress = false;
  bool stream = false;
  // jobs: page size (0: the default) and the job id the page starts after.
  uint64_t limit = 0;
  std::string after;
};

struct timing {
  uint64_t queue_us = 0;
  uint64_t compute_us = 0;
  uint64_t total_us = 0;
};

enum class reply_source : uint8_t { none, cache, executor, coalesced };

std::string_view to_string(reply_source s) noexcept;

// Entries of the `models` op reply.
struct io_spec {
  std::string name;
  dtype type = dtype::f32;
  std::vector<int64_t> shape; // -1 marks the batch axis
};

struct model_info {
  std::string name;
  std::vector<uint64_t> versions;
  std::string state; // loaded, loading, available
  std::vector<io_spec> inputs;
  std::vector<io_spec> outputs;
  // While loading: model file bytes made ready so far, of a total that
  // grows as file sizes become known (key `progress`, {done, total}).
  bool has_progress = false;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
};

// One GPU of a node, as the `status` op shows it (key `devices`) and as a
// worker reports it to its head (net/cluster_codec.hpp).
struct node_device {
  std::string name;    // "gpu:0"
  std::string product; // "NVIDIA H100 80GB HBM3"
  uint64_t total_bytes = 0;
  uint64_t used_bytes = 0; // by every process on the device, not only ours
  // Model name -> this node's replicas on the device.
  std::vector<std::pair<std::string, uint64_t>> replicas;
  friend bool operator==(const node_device&, const node_device&) = default;
};

// One model version in a `reload` reply (keys `added`, `removed`,
// `refused`); `error` says why a refused one was refused.
struct catalog_change {
  std::string model;
  uint64_t version = 0;
  std::string error;
  friend bool operator==(const catalog_change&,
                         const catalog_change&) = default;
};

// Entries of the `status` op reply.
struct node_info {
  std::string name;
  std::string role;  // head, worker, all
  std::string state; // up, suspect, draining, down
  std::vector<std::pair<std::string, std::string>> labels;
  std::vector<std::pair<std::string, uint64_t>> replicas;
  std::vector<node_device> devices; // its GPUs; empty without
};

// One job as the `job` and `jobs` ops show it.
struct job_info {
  std::string job;
  std::string state; // queued, running, done, failed, cancelled
  std::string model;
  std::optional<uint64_t> version;
  bool has_progress = false;
  uint64_t done = 0;
  uint64_t total = 0;
  uint64_t created_ms = 0; // Unix time
  uint64_t updated_ms = 0;
};

// A reply to any op. Fields that do not apply to the op stay empty and are
// not encoded.
struct reply {
  uint32_t v = 1;
  request_id id;
  status code = status::ok;
  std::string error;
  std::vector<tensor> outputs;
  // Pre-encoded msgpack array of tensors; when non-empty it is written
  // verbatim instead of `outputs`, which lets the cache serve hits without
  // re-encoding.
  std::string outputs_encoded;
  reply_source source = reply_source::none;
  std::string model;
  std::optional<uint64_t> version;
  std::optional<timing> timing_us;
  std::string node;
  std::vector<model_info> models; // op models
  std::vector<node_info> nodes;   // op status
  bool has_models = false;
  bool has_nodes = false;
  // A refusal for a tenant limit: when a retry may succeed.
  std::optional<uint64_t> retry_after_ms;
  // op reload: what the re-read of the model repository changed.
  std::vector<catalog_change> added;
  std::vector<catalog_change> removed;
  std::vector<catalog_change> refused;
  bool has_changes = false;
  // Jobs: `job`, `state`, `progress`, `created_ms` and `updated_ms` of one
  // job (has_job), the `jobs` list (has_jobs), and a streamed frame's
  // `event` (progress, done).
  bool has_job = false;
  job_info job;
  bool has_jobs = false;
  std::vector<job_info> jobs;
  std::string event;
};

} // namespace shoal
