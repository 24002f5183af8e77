// The atoms of the actors' messages, shared by their typed interfaces. Each
// actor's own header holds its message types and its typed interface (a
// caf::typed_actor handle type), with who sends each message and what
// comes back:
//   executor (replica_handle, replica_listener_handle, executor_handle),
//   supervisor (replica_source_handle, supervisor_handle), router
//   (router_handle), cache (cache_handle) in actors/serving/; coordinator
//   (coordinator_handle), worker_agent (worker_agent_handle),
//   remote_replica (remote_replica_handle) and link_box
//   (link_events_handle) in actors/cluster/.
#pragma once

#include <caf/atom.hpp>

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
using reload_atom = caf::atom_constant<caf::atom("reload")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using progress_atom = caf::atom_constant<caf::atom("progress")>;
using job_atom = caf::atom_constant<caf::atom("job")>;
using abandon_atom = caf::atom_constant<caf::atom("abandon")>;

} // namespace shoal
