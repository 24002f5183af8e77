// cache: the maintenance side of the result cache. Lookups and inserts go
// straight to the thread-safe result_cache (the gateway answers hits on its
// own thread, with no hop); this actor expires entries whose TTL ran out so
// that their memory is returned even if nobody asks for them again.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "actors/messages.hpp"
#include "actors/serving/result_cache.hpp"

namespace shoal {

using cache_handle = caf::typed_actor<
    // From itself, every `period`: drops expired entries; nothing comes
    // back.
    caf::reacts_to<sweep_atom>,
    // From the node (admin): empties the cache; returns the number of
    // entries dropped.
    caf::replies_to<clear_atom>::with<uint64_t>>;

struct cache_state {
  std::shared_ptr<result_cache> cache;
  std::chrono::milliseconds period{1000};
  static inline const char* name = "cache";
};

cache_handle::behavior_type
cache_actor(cache_handle::stateful_pointer<cache_state> self,
            std::shared_ptr<result_cache> cache,
            std::chrono::milliseconds period);

} // namespace shoal
