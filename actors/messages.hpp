// Atoms and message types shared by the node's actors. Each actor's own
// header lists which of these it handles, who sends them and what comes
// back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/atom.hpp>

#include "actors/serving/result_cache.hpp"
#include "net/gateway/reply_sink.hpp"
#include "net/wire/exec.hpp"
#include "net/wire/message.hpp"

namespace shoal {

using exec_atom = caf::atom_constant<caf::atom("exec")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using spawn_atom = caf::atom_constant<caf::atom("spawn")>;
using spawn_fail_atom = caf::atom_constant<caf::atom("spawnfail")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using collect_atom = caf::atom_constant<caf::atom("collect")>;
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
using clear_atom = caf::atom_constant<caf::atom("clear")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using count_atom = caf::atom_constant<caf::atom("count")>;
using retire_atom = caf::atom_constant<caf::atom("retire")>;
using link_msg_atom = caf::atom_constant<caf::atom("linkmsg")>;
using peer_atom = caf::atom_constant<caf::atom("peer")>;
using set_router_atom = caf::atom_constant<caf::atom("setrouter")>;

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cache_key& x) {
  return f(x.bytes, x.hash_lo, x.hash_hi);
}

// An inference request the gateway could not answer from cache; sent to
// the router.
struct infer_job {
  request_id id;
  std::string model;
  uint64_t version = 0;
  std::vector<tensor> inputs; // in the model's declared input order
  uint64_t rows = 1;          // batch rows of this request
  uint8_t priority = 5;
  int64_t recv_ns = 0;
  int64_t deadline_ns = 0;
  uint8_t cache = 0;      // cache_mode
  bool cacheable = false; // the model caches and the node has a budget
  cache_key key;          // set when cacheable
  reply_route route;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, infer_job& x) {
  return f(x.id, x.model, x.version, x.inputs, x.rows, x.priority, x.recv_ns,
           x.deadline_ns, x.cache, x.cacheable, x.key, x.route);
}

// A non-infer op the router answers (models, status, load, unload).
struct admin_job {
  request_id id;
  uint8_t op = 0; // op_kind
  std::string model;
  uint64_t version = 0; // 0: not given
  std::string node;
  reply_route route;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, admin_job& x) {
  return f(x.id, x.op, x.model, x.version, x.node, x.route);
}

} // namespace shoal
