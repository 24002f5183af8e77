// The gateway's side of the job ops: who the caller's tenant is, turning a
// submit into a validated request, and handing job ops to the job manager
// (actors/jobs/job_manager.hpp). Runs on the gateway thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "actors/jobs/job_manager.hpp"
#include "actors/serving/result_cache.hpp"
#include "actors/serving/router.hpp"
#include "gpu/model/live_catalog.hpp"
#include "gpu/model/model_spec.hpp"
#include "net/gateway/client_socket.hpp"
#include "net/wire/codec.hpp"

namespace shoal {

// The tenant a request counts against: the client key's when the peer
// authenticated with one, else the request's `tenant`, else "default".
std::string tenant_of(const request& req, const client_peer& peer);

// An infer request (or a submit's) checked against the model catalog: the
// model and version resolved, the inputs validated and put in declared
// order, the cache key made when the model caches. NOT_FOUND or
// INVALID_ARGUMENT otherwise.
caf::expected<infer_job> make_infer_job(const model_catalog& catalog,
                                        const result_cache& cache,
                                        request& req);

// What the job manager uses to queue a stored submit frame again.
job_rebuild_fn make_job_rebuild(live_catalog_ptr catalog,
                                std::shared_ptr<result_cache> cache,
                                codec_limits limits);

// A job op from `peer`: checked here and handed to the job manager, or
// (returned) a reply to send at once when it is refused. A `cancel`
// without `job` goes to the router: it names an open infer by its id.
std::optional<reply> forward_job_op(const job_manager_handle& jobs,
                                    const router_handle& router,
                                    const model_catalog& catalog,
                                    const result_cache& cache, request& req,
                                    const client_peer& peer, reply_route& route,
                                    std::string_view frame);

} // namespace shoal
