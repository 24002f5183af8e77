#include "actors/jobs/job_ops.hpp"

#include <algorithm>

#include <caf/all.hpp>

#include "gpu/model/manifest.hpp"
#include "net/wire/error.hpp"
#include "net/wire/exec.hpp"

namespace shoal {

namespace {

// The inputs in the model's declared order: the order backends take.
void sort_inputs(const model_spec& spec, std::vector<tensor>& inputs) {
  auto pos = [&](const std::string& n) {
    for (size_t i = 0; i < spec.inputs.size(); ++i) {
      if (spec.inputs[i].name == n) {
        return i;
      }
    }
    return spec.inputs.size();
  };
  std::sort(inputs.begin(), inputs.end(),
            [&](const tensor& a, const tensor& b) {
              return pos(a.name) < pos(b.name);
            });
}

reply refusal(const request& req, status code, std::string why) {
  reply r;
  r.id = req.id;
  r.code = code;
  r.error = std::move(why);
  r.model = req.model;
  return r;
}

} // namespace

std::string tenant_of(const request& req, const client_peer& peer) {
  if (!peer.tenant.empty()) {
    return peer.tenant;
  }
  return req.tenant.empty() ? std::string{"default"} : req.tenant;
}

caf::expected<infer_job> make_infer_job(const model_catalog& catalog,
                                        const result_cache& cache,
                                        request& req) {
  auto spec = catalog.resolve(req.model, req.version);
  if (!spec) {
    return make_error(
        errc::not_found,
        "model " + req.model +
            (req.version ? " v" + std::to_string(*req.version) : "") +
            " not found");
  }
  auto rows = validate_inputs(*spec, req.inputs);
  if (!rows) {
    return rows.error();
  }
  sort_inputs(*spec, req.inputs);
  infer_job job;
  job.cacheable = spec->cache_enabled && cache.cfg().max_bytes > 0;
  if (job.cacheable) {
    job.key = make_cache_key(spec->name, spec->version, req.inputs);
  }
  job.id = req.id;
  job.model = spec->name;
  job.version = spec->version;
  job.inputs = std::move(req.inputs);
  job.rows = *rows;
  job.priority = req.priority;
  job.cache = static_cast<uint8_t>(req.cache);
  job.stream = req.stream;
  return job;
}

job_rebuild_fn make_job_rebuild(live_catalog_ptr catalog,
                                std::shared_ptr<result_cache> cache,
                                codec_limits limits) {
  return
      [catalog, cache, limits](const std::string& frame,
                               uint64_t version) -> caf::expected<infer_job> {
        request req;
        if (auto err =
                decode_request(reinterpret_cast<const uint8_t*>(frame.data()),
                               frame.size(), limits, req)) {
          return err;
        }
        req.version = version;
        return make_infer_job(*catalog->get(), *cache, req);
      };
}

std::optional<reply> forward_job_op(const job_manager_handle& jobs,
                                    const router_handle& router,
                                    const model_catalog& catalog,
                                    const result_cache& cache, request& req,
                                    const client_peer& peer, reply_route& route,
                                    std::string_view frame) {
  if (req.op == op_kind::cancel && req.job.empty()) {
    caf::anon_send(router, cancel_atom::value, std::move(route), req.id);
    return std::nullopt;
  }
  if (!jobs) {
    return refusal(req, status::unavailable,
                   "jobs are served by the head; this node has none");
  }
  job_request jr;
  jr.op = static_cast<uint8_t>(req.op);
  jr.id = req.id;
  jr.tenant = tenant_of(req, peer);
  jr.job = std::move(req.job);
  jr.progress = req.progress || req.stream;
  jr.timeout_ms = req.timeout_ms.value_or(0);
  jr.limit = req.limit;
  jr.after = std::move(req.after);
  if (req.op == op_kind::submit) {
    auto job = make_infer_job(catalog, cache, req);
    if (!job) {
      return refusal(req, to_status(job.error()), reason_of(job.error()));
    }
    jr.infer = std::move(*job);
    jr.frame.assign(frame.data(), frame.size());
  }
  jr.route = std::move(route);
  caf::anon_send(jobs, std::move(jr));
  return std::nullopt;
}

} // namespace shoal
