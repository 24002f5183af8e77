#include "gpu/model/live_catalog.hpp"

namespace shoal {

std::string manifest_path(const model_spec& spec) {
  if (!spec.source.empty()) {
    return spec.source + "/model.toml";
  }
  return spec.dir + "/model.toml";
}

catalog_update merge_catalogs(const model_catalog& current,
                              const model_catalog& scanned) {
  catalog_update out;
  auto next = std::make_shared<model_catalog>();
  for (auto& [name, versions] : scanned.models) {
    auto cur = current.models.find(name);
    for (auto& [v, spec] : versions) {
      model_spec_ptr known;
      if (cur != current.models.end()) {
        if (auto i = cur->second.find(v); i != cur->second.end()) {
          known = i->second;
        }
      }
      if (!known) {
        out.added.push_back({name, v, {}});
        next->models[name][v] = spec;
        continue;
      }
      // A version's results may be cached and its replicas running: what
      // it computes must not change under them.
      if (known->manifest_sha256 != spec->manifest_sha256) {
        out.refused.push_back(
            {name, v,
             manifest_path(*spec) +
                 " changed since this node read it; a published version "
                 "is immutable, publish a new version instead (v" +
                 std::to_string(v) + " keeps serving as it was)"});
      }
      next->models[name][v] = known;
    }
  }
  for (auto& [name, versions] : current.models) {
    auto s = scanned.models.find(name);
    for (auto& [v, spec] : versions) {
      if (s == scanned.models.end() || s->second.count(v) == 0) {
        out.removed.push_back({name, v, {}});
      }
    }
  }
  out.catalog = std::move(next);
  return out;
}

live_catalog::live_catalog(model_catalog_ptr initial)
    : current_(initial ? std::move(initial)
                       : std::make_shared<const model_catalog>()) {
  // nop
}

model_catalog_ptr live_catalog::get() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return current_;
}

void live_catalog::set(model_catalog_ptr next) {
  std::lock_guard<std::mutex> guard{mtx_};
  current_ = std::move(next);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

void live_catalog::reread(reread_done done) const {
  std::function<void(reread_done)> f;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    f = rereader_;
  }
  if (f) {
    return f(std::move(done));
  }
  catalog_update same;
  same.catalog = get();
  done(same);
}

void live_catalog::set_rereader(std::function<void(reread_done)> f) {
  std::lock_guard<std::mutex> guard{mtx_};
  rereader_ = std::move(f);
}

} // namespace shoal
