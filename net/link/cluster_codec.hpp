// Bodies of the node-to-node messages that ride in node_link envelopes
// (net/node_link.hpp). The link authenticates and frames them; these are the
// payloads, one MessagePack array each (positional: both ends are shoal of
// the same link protocol version). Decoding checks every type and length
// and uses explicit unpack limits; a failure names the message and field.
//
//   type          direction        body
//   link.hello    worker -> head   worker_hello (the link's join handshake)
//   spawn         head -> worker   spawn_msg: start a replica
//   ready         worker -> head   replica_desc: a replica finished loading
//   spawn_fail    worker -> head   spawn_fail_msg: it will not come
//   retire        head -> worker   retire_msg: stop replicas (idle, drain)
//   replica_down  worker -> head   replica_down_msg: a replica died
//   exec          head -> worker   exec_msg: requests for one replica
//   done          worker -> head   done_msg: one batch's results
//   drain         both             empty: head -> worker asks it to drain;
//                                  worker -> head announces it is draining
//   leave         worker -> head   empty: exiting now (no timeout needed)
//   devices       worker -> head   devices_msg: its GPUs now (sent when they
//                                  changed; a head that predates it ignores
//                                  the type)
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "net/wire/exec.hpp"

namespace shoal {

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

void encode(const worker_hello& x, std::string& out);
void encode(const spawn_msg& x, std::string& out);
void encode(const spawn_fail_msg& x, std::string& out);
void encode(const retire_msg& x, std::string& out);
void encode(const replica_desc& x, std::string& out);
void encode(const replica_down_msg& x, std::string& out);
void encode(const exec_msg& x, std::string& out);
void encode(const done_msg& x, std::string& out);
void encode(const devices_msg& x, std::string& out);

caf::error decode(const std::string& body, worker_hello& out);
caf::error decode(const std::string& body, spawn_msg& out);
caf::error decode(const std::string& body, spawn_fail_msg& out);
caf::error decode(const std::string& body, retire_msg& out);
caf::error decode(const std::string& body, replica_desc& out);
caf::error decode(const std::string& body, replica_down_msg& out);
caf::error decode(const std::string& body, exec_msg& out);
caf::error decode(const std::string& body, done_msg& out);
caf::error decode(const std::string& body, devices_msg& out);

} // namespace shoal
