// --json: replies as JSON, by hand (no JSON library is among the project's
// dependencies, and the shapes are fixed).
#include <string>
#include <vector>

#include "runtime/shoalctl/bench_load.hpp"
#include "runtime/shoalctl/render.hpp"

namespace shoal::ctl {

namespace {

class json_object {
public:
  explicit json_object(std::string& out) : out_(out) { out_ += '{'; }
  ~json_object() { out_ += '}'; }
  json_object(const json_object&) = delete;
  json_object& operator=(const json_object&) = delete;

  std::string& key(std::string_view k) {
    if (!first_) {
      out_ += ',';
    }
    first_ = false;
    append_json_string(out_, k);
    out_ += ':';
    return out_;
  }

private:
  std::string& out_;
  bool first_ = true;
};

void append_json_id(std::string& out, const request_id& id) {
  switch (id.k) {
  case request_id::kind::nil:
    out += "null";
    break;
  case request_id::kind::num:
    out += std::to_string(id.num);
    break;
  case request_id::kind::str:
    append_json_string(out, id.str);
    break;
  }
}

template <class Range, class F>
void append_json_array(std::string& out, const Range& xs, F each) {
  out += '[';
  bool first = true;
  for (auto& x : xs) {
    if (!first) {
      out += ',';
    }
    first = false;
    each(x);
  }
  out += ']';
}

void append_json_specs(std::string& out, const std::vector<io_spec>& specs) {
  append_json_array(out, specs, [&](const io_spec& s) {
    json_object o{out};
    append_json_string(o.key("name"), s.name);
    append_json_string(o.key("dtype"), to_string(s.type));
    append_json_array(o.key("shape"), s.shape,
                      [&](int64_t d) { out += std::to_string(d); });
  });
}

// The keys every reply may carry besides its op's own.
void append_common(json_object& o, const reply& rep) {
  o.key("v") += std::to_string(rep.v);
  append_json_id(o.key("id"), rep.id);
  append_json_string(o.key("status"), to_string(rep.code));
  if (!rep.error.empty()) {
    append_json_string(o.key("error"), rep.error);
  }
  if (rep.source != reply_source::none) {
    append_json_string(o.key("source"), to_string(rep.source));
  }
  if (!rep.model.empty()) {
    append_json_string(o.key("model"), rep.model);
  }
  if (rep.version) {
    o.key("version") += std::to_string(*rep.version);
  }
  if (!rep.node.empty()) {
    append_json_string(o.key("node"), rep.node);
  }
  if (rep.timing_us) {
    json_object t{o.key("timing_us")};
    t.key("queue") += std::to_string(rep.timing_us->queue_us);
    t.key("compute") += std::to_string(rep.timing_us->compute_us);
    t.key("total") += std::to_string(rep.timing_us->total_us);
  }
}

void append_tensor(std::string& out, const tensor& t) {
  json_object to{out};
  append_json_string(to.key("name"), t.name);
  append_json_string(to.key("dtype"), to_string(t.type));
  append_json_array(to.key("shape"), t.shape,
                    [&](uint64_t d) { out += std::to_string(d); });
  auto& vals = to.key("values");
  vals += '[';
  auto size = dtype_size(t.type);
  auto n = size ? t.data.size() / size : 0;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) {
      vals += ',';
    }
    append_value(vals, t, i, true);
  }
  vals += ']';
}

void append_model(std::string& out, const model_info& m) {
  json_object mo{out};
  append_json_string(mo.key("name"), m.name);
  append_json_array(mo.key("versions"), m.versions,
                    [&](uint64_t v) { out += std::to_string(v); });
  append_json_string(mo.key("state"), m.state);
  append_json_specs(mo.key("inputs"), m.inputs);
  append_json_specs(mo.key("outputs"), m.outputs);
}

void append_counts(std::string& out,
                   const std::vector<std::pair<std::string, uint64_t>>& xs) {
  json_object o{out};
  for (auto& [k, v] : xs) {
    o.key(k) += std::to_string(v);
  }
}

void append_device(std::string& out, const node_device& d) {
  json_object o{out};
  append_json_string(o.key("name"), d.name);
  append_json_string(o.key("product"), d.product);
  o.key("total_bytes") += std::to_string(d.total_bytes);
  o.key("used_bytes") += std::to_string(d.used_bytes);
  append_counts(o.key("replicas"), d.replicas);
}

void append_node(std::string& out, const node_info& n) {
  json_object no{out};
  append_json_string(no.key("name"), n.name);
  append_json_string(no.key("role"), n.role);
  append_json_string(no.key("state"), n.state);
  {
    json_object lo{no.key("labels")};
    for (auto& [k, v] : n.labels) {
      append_json_string(lo.key(k), v);
    }
  }
  append_counts(no.key("replicas"), n.replicas);
  append_json_array(no.key("devices"), n.devices,
                    [&](const node_device& d) { append_device(out, d); });
}

void append_change(std::string& out, const catalog_change& c) {
  json_object o{out};
  append_json_string(o.key("model"), c.model);
  o.key("version") += std::to_string(c.version);
  if (!c.error.empty()) {
    append_json_string(o.key("error"), c.error);
  }
}

// A job's keys, each when set.
void append_job(json_object& o, const job_info& j) {
  if (!j.job.empty()) {
    append_json_string(o.key("job"), j.job);
  }
  if (!j.state.empty()) {
    append_json_string(o.key("state"), j.state);
  }
  if (!j.model.empty()) {
    append_json_string(o.key("model"), j.model);
  }
  if (j.has_progress) {
    o.key("progress") += "{\"done\":" + std::to_string(j.done) +
                         ",\"total\":" + std::to_string(j.total) + "}";
  }
  if (j.created_ms > 0) {
    o.key("created_ms") += std::to_string(j.created_ms);
  }
  if (j.updated_ms > 0) {
    o.key("updated_ms") += std::to_string(j.updated_ms);
  }
}

} // namespace

std::string reply_json(const reply& rep) {
  std::string out;
  {
    json_object o{out};
    append_common(o, rep);
    if (!rep.outputs.empty()) {
      append_json_array(o.key("outputs"), rep.outputs,
                        [&](const tensor& t) { append_tensor(out, t); });
    }
    if (rep.has_models) {
      append_json_array(o.key("models"), rep.models,
                        [&](const model_info& m) { append_model(out, m); });
    }
    if (rep.has_nodes) {
      append_json_array(o.key("nodes"), rep.nodes,
                        [&](const node_info& n) { append_node(out, n); });
    }
    if (rep.has_changes) {
      auto change = [&](const catalog_change& c) { append_change(out, c); };
      append_json_array(o.key("added"), rep.added, change);
      append_json_array(o.key("removed"), rep.removed, change);
      append_json_array(o.key("refused"), rep.refused, change);
    }
    append_job(o, rep.job);
    if (rep.has_jobs) {
      append_json_array(o.key("jobs"), rep.jobs, [&](const job_info& j) {
        json_object jo{out};
        append_job(jo, j);
      });
    }
  }
  out += '\n';
  return out;
}

} // namespace shoal::ctl
