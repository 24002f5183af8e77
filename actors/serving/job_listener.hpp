// What the router tells whoever handed it a request on behalf of a durable
// job (the job manager, actors/jobs/job_manager.hpp) instead of replying to
// a client: that the request started running, its progress, and its final
// reply, encoded as the client would have received it.
#pragma once

#include <cstdint>
#include <string>

#include <caf/typed_actor.hpp>

#include "actors/messages.hpp"
#include "net/wire/message.hpp"

namespace shoal {

enum class job_event_kind : uint8_t { running, progress, finished };

struct job_event {
  request_id id; // the id the listener gave the request
  job_event_kind kind = job_event_kind::progress;
  uint64_t done = 0; // progress: steps done of total
  uint64_t total = 0;
  uint8_t code = 0; // finished: the reply's status
  std::string error;
  std::string reply; // finished: the encoded reply (msgpack map)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_event& x) {
  return f(x.id, x.kind, x.done, x.total, x.code, x.error, x.reply);
}

using job_listener_handle = caf::typed_actor<
    // From the router: a job's request started running, made progress, or
    // ended (its final reply). Nothing comes back.
    caf::reacts_to<job_atom, job_event>>;

} // namespace shoal
