// The cluster's own messages: the ops workers and the head exchange over a
// node link (net/link/node_link.hpp), their bodies, and how a body is sent.
// The link authenticates and frames them; these are the payloads, one
// MessagePack array each (positional: both ends are shoal of the same link
// protocol version). Decoding checks every type and length and uses
// explicit unpack limits; a failure names the message and field.
//
//   op            direction        body
//   (link.hello)  worker -> head   worker_hello (the link's join handshake,
//                                  set with set_hello, not an op)
//   spawn         head -> worker   spawn_msg: start a replica
//   ready         worker -> head   replica_desc: a replica finished loading
//   spawn_fail    worker -> head   spawn_fail_msg: it will not come
//   retire        head -> worker   retire_msg: stop replicas (idle, drain)
//   replica_down  worker -> head   replica_down_msg: a replica died
//   exec          head -> worker   exec_msg: requests for one replica
//   done          worker -> head   done_msg: one batch's results
//   drain         both             drain_msg (empty): head -> worker asks it
//                                  to drain; worker -> head announces it is
//                                  draining
//   leave         worker -> head   leave_msg (empty): exiting now (no
//                                  timeout needed)
//   devices       worker -> head   devices_msg: its GPUs now (sent when they
//                                  changed)
//   progress      worker -> head   progress_msg: steps done of a replica's
//                                  running batch
//   cancel        head -> worker   cancel_msg: stop a ticket between steps
//
// On the wire an op stays the string that to_string gives (the envelope's
// `t`), not a number: a node that meets an op it does not know (one a newer
// node added, as `devices` once was) can name it in its log and ignore it,
// and neither side needs to agree on a numbering, so nodes of neighbouring
// versions keep talking during a rolling upgrade. A new op is added at the
// end of cluster_op, with a new name; a name is never reused.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>

#include "net/link/node_link.hpp"
#include "net/wire/exec.hpp"

namespace shoal {

// The op of a cluster message. Receivers switch on it without a default, so
// that an op added here is a -Wswitch warning at every end that ignores it.
enum class cluster_op : uint8_t {
  spawn,
  ready,
  spawn_fail,
  retire,
  replica_down,
  exec,
  done,
  drain,
  leave,
  devices,
  progress,
  cancel,
};

// The op's name on the wire.
std::string_view to_string(cluster_op op) noexcept;

// The op named `name`, or nullopt for a name this node does not know.
std::optional<cluster_op> parse_cluster_op(std::string_view name) noexcept;

struct replica_desc {
  uint64_t id = 0; // unique per worker incarnation
  std::string model;
  uint64_t version = 0;
  std::string device;
  uint64_t memory_bytes = 0;
};

struct worker_hello {
  std::string role = "worker";
  std::vector<std::pair<std::string, std::string>> labels;
  uint64_t memory_bytes = 0; // placement budget; 0: unlimited
  bool draining = false;
  std::string metrics_target; // HOST:PORT of its /metrics, for /sd
  std::vector<replica_desc> replicas;
  // Model versions whose files are in the worker's verified cache.
  std::vector<std::pair<std::string, uint64_t>> cached;
  // Its GPUs at the time of the hello (appended field: a hello without it
  // decodes as a worker without GPUs).
  std::vector<node_device> devices;
};

// At most this many GPUs per node and model entries per GPU are accepted:
// far above any real machine, low enough that a bad body is cheap.
constexpr size_t max_node_devices = 64;
constexpr size_t max_device_replicas = 4096;

struct devices_msg {
  std::vector<node_device> devices;
};

struct spawn_msg {
  std::string model;
  uint64_t version = 0;
  std::string reason;
};

struct spawn_fail_msg {
  std::string model;
  uint64_t version = 0;
  std::string reason;
};

struct retire_msg {
  uint64_t replica = 0; // 0: every replica of model/version
  std::string model;
  uint64_t version = 0;
};

struct replica_down_msg {
  uint64_t replica = 0;
  std::string reason;
};

// exec_item::deadline_ns and sent_ns are steady-clock values of the sender;
// on the wire they travel as time left / time since, so that the two
// nodes' clocks never need to agree.
struct exec_msg {
  uint64_t replica = 0;
  std::vector<exec_item> items;
};

struct done_msg {
  uint64_t replica = 0;
  std::vector<exec_result> results;
};

// At most this many tickets per progress message: a batch holds at most
// max_batch (<= 4096) rows, and every request has at least one.
constexpr size_t max_progress_tickets = 4096;

// Steps `done` of `total` of the batch running the head's `tickets` (the
// worker's executors run under the head's tickets; see worker_agent).
struct progress_msg {
  uint64_t replica = 0;
  std::vector<uint64_t> tickets;
  uint64_t done = 0;
  uint64_t total = 0;
};

// The head cancelled `ticket`, which it sent to `replica` in an `exec`.
struct cancel_msg {
  uint64_t replica = 0;
  uint64_t ticket = 0;
};

// The empty bodies: their op says it all. Decoding one ignores whatever
// body came, so that a later version may add fields.
struct drain_msg {};
struct leave_msg {};

// The op each body travels under (a replica_desc alone is a `ready`).
constexpr cluster_op op_of(const spawn_msg&) noexcept {
  return cluster_op::spawn;
}
constexpr cluster_op op_of(const replica_desc&) noexcept {
  return cluster_op::ready;
}
constexpr cluster_op op_of(const spawn_fail_msg&) noexcept {
  return cluster_op::spawn_fail;
}
constexpr cluster_op op_of(const retire_msg&) noexcept {
  return cluster_op::retire;
}
constexpr cluster_op op_of(const replica_down_msg&) noexcept {
  return cluster_op::replica_down;
}
constexpr cluster_op op_of(const exec_msg&) noexcept {
  return cluster_op::exec;
}
constexpr cluster_op op_of(const done_msg&) noexcept {
  return cluster_op::done;
}
constexpr cluster_op op_of(const drain_msg&) noexcept {
  return cluster_op::drain;
}
constexpr cluster_op op_of(const leave_msg&) noexcept {
  return cluster_op::leave;
}
constexpr cluster_op op_of(const devices_msg&) noexcept {
  return cluster_op::devices;
}
constexpr cluster_op op_of(const progress_msg&) noexcept {
  return cluster_op::progress;
}
constexpr cluster_op op_of(const cancel_msg&) noexcept {
  return cluster_op::cancel;
}

void encode(const worker_hello& x, std::string& out);
void encode(const spawn_msg& x, std::string& out);
void encode(const spawn_fail_msg& x, std::string& out);
void encode(const retire_msg& x, std::string& out);
void encode(const replica_desc& x, std::string& out);
void encode(const replica_down_msg& x, std::string& out);
void encode(const exec_msg& x, std::string& out);
void encode(const done_msg& x, std::string& out);
void encode(const devices_msg& x, std::string& out);
void encode(const drain_msg& x, std::string& out);
void encode(const leave_msg& x, std::string& out);
void encode(const progress_msg& x, std::string& out);
void encode(const cancel_msg& x, std::string& out);

caf::error decode(const std::string& body, worker_hello& out);
caf::error decode(const std::string& body, spawn_msg& out);
caf::error decode(const std::string& body, spawn_fail_msg& out);
caf::error decode(const std::string& body, retire_msg& out);
caf::error decode(const std::string& body, replica_desc& out);
caf::error decode(const std::string& body, replica_down_msg& out);
caf::error decode(const std::string& body, exec_msg& out);
caf::error decode(const std::string& body, done_msg& out);
caf::error decode(const std::string& body, devices_msg& out);
caf::error decode(const std::string& body, drain_msg& out);
caf::error decode(const std::string& body, leave_msg& out);
caf::error decode(const std::string& body, progress_msg& out);
caf::error decode(const std::string& body, cancel_msg& out);

// Sends one cluster message to `peer` (hub: a worker's name; member: "" for
// the hub) under its body's op (op_of): there is one overload per body, so
// a body cannot travel under another op, and nothing else can be sent.
// Errors are node_link::send's.
caf::error send(node_link& link, const std::string& peer, const spawn_msg& x);
caf::error send(node_link& link, const std::string& peer,
                const replica_desc& x); // ready
caf::error send(node_link& link, const std::string& peer,
                const spawn_fail_msg& x);
caf::error send(node_link& link, const std::string& peer, const retire_msg& x);
caf::error send(node_link& link, const std::string& peer,
                const replica_down_msg& x);
caf::error send(node_link& link, const std::string& peer, const exec_msg& x);
caf::error send(node_link& link, const std::string& peer, const done_msg& x);
caf::error send(node_link& link, const std::string& peer, const drain_msg& x);
caf::error send(node_link& link, const std::string& peer, const leave_msg& x);
caf::error send(node_link& link, const std::string& peer, const devices_msg& x);
caf::error send(node_link& link, const std::string& peer,
                const progress_msg& x);
caf::error send(node_link& link, const std::string& peer, const cancel_msg& x);

// Makes `x` the body of the member's later hellos (node_link::set_hello).
caf::error set_hello(node_link& link, const worker_hello& x);

} // namespace shoal
