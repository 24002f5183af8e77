// cache: the maintenance side of the result cache. Lookups and inserts go
// straight to the thread-safe result_cache (the gateway answers hits on its
// own thread, with no hop); this actor expires entries whose TTL ran out so
// that their memory is returned even if nobody asks for them again.
//
// Handlers:
//   (sweep_atom)   from itself, every `period`: drops expired entries.
//   (clear_atom)   from the node (admin): empties the cache; returns the
//                  number of entries dropped.
#pragma once

#include <chrono>
#include <memory>

#include <caf/stateful_actor.hpp>

#include "actors/messages.hpp"
#include "actors/serving/result_cache.hpp"

namespace shoal {

struct cache_state {
  std::shared_ptr<result_cache> cache;
  std::chrono::milliseconds period{1000};
  static inline const char* name = "cache";
};

caf::behavior cache_actor(caf::stateful_actor<cache_state>* self,
                          std::shared_ptr<result_cache> cache,
                          std::chrono::milliseconds period);

} // namespace shoal
