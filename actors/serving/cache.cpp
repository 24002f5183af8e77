#include "actors/serving/cache.hpp"

#include <caf/all.hpp>

namespace shoal {

cache_handle::behavior_type
cache_actor(cache_handle::stateful_pointer<cache_state> self,
            std::shared_ptr<result_cache> cache,
            std::chrono::milliseconds period) {
  self->state.cache = std::move(cache);
  self->state.period = period;
  self->delayed_send(self, period, sweep_atom::value);
  return {
      [=](sweep_atom) {
        self->state.cache->expire();
        self->delayed_send(self, self->state.period, sweep_atom::value);
      },
      [=](clear_atom) {
        uint64_t n = self->state.cache->stats().entries;
        self->state.cache->clear();
        return n;
      },
  };
}

} // namespace shoal
