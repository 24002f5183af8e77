// Replies as people read them: tables with aligned columns, and lines.
#include <iostream>
#include <string>
#include <vector>

#include "config/human_bytes.hpp"
#include "runtime/shoalctl/bench_load.hpp"
#include "runtime/shoalctl/render.hpp"

namespace shoal::ctl {

namespace {

// Left-aligned columns, two spaces apart, the first row a header.
// The rows with their columns aligned, one line each.
std::vector<std::string>
table_lines(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) {
        width.push_back(0);
      }
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::vector<std::string> out;
  for (auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line.append(width[i] - row[i].size() + 2, ' ');
      }
    }
    out.push_back(std::move(line));
  }
  return out;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  for (auto& line : table_lines(rows)) {
    std::cout << line << '\n';
  }
}

std::string spec_text(const std::vector<io_spec>& specs) {
  std::string out;
  for (auto& s : specs) {
    if (!out.empty()) {
      out += ' ';
    }
    out += s.name;
    out += ':';
    out += to_string(s.type);
    out += '[';
    for (size_t i = 0; i < s.shape.size(); ++i) {
      if (i > 0) {
        out += ',';
      }
      out += std::to_string(s.shape[i]);
    }
    out += ']';
  }
  return out.empty() ? "-" : out;
}

std::string tensor_text(const tensor& t, size_t max_values) {
  std::string out = t.name;
  out += ' ';
  out += to_string(t.type);
  out += " [";
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (i > 0) {
      out += ',';
    }
    out += std::to_string(t.shape[i]);
  }
  out += "]:";
  auto size = dtype_size(t.type);
  auto n = size ? t.data.size() / size : 0;
  for (size_t i = 0; i < n && i < max_values; ++i) {
    out += i == 0 ? " " : ", ";
    append_value(out, t, i, false);
  }
  if (n > max_values) {
    out += ", ... (" + std::to_string(n) + " values)";
  }
  return out;
}

} // namespace

void print_models(const reply& rep) {
  if (rep.models.empty()) {
    std::cout << "no models\n";
    return;
  }
  std::vector<std::vector<std::string>> rows{
      {"NAME", "VERSIONS", "STATE", "INPUTS", "OUTPUTS"}};
  for (auto& m : rep.models) {
    std::string versions;
    for (auto v : m.versions) {
      if (!versions.empty()) {
        versions += ',';
      }
      versions += std::to_string(v);
    }
    rows.push_back({m.name, versions.empty() ? "-" : versions,
                    m.state.empty() ? "-" : m.state, spec_text(m.inputs),
                    spec_text(m.outputs)});
  }
  print_table(rows);
}

void print_changes(const reply& rep) {
  auto lines = [](const char* what, const std::vector<catalog_change>& xs) {
    for (auto& c : xs) {
      std::cout << what << ' ' << c.model << " version " << c.version;
      if (!c.error.empty()) {
        std::cout << ": " << c.error;
      }
      std::cout << '\n';
    }
  };
  lines("added", rep.added);
  lines("removed", rep.removed);
  lines("refused", rep.refused);
  if (rep.added.empty() && rep.removed.empty() && rep.refused.empty()) {
    std::cout << "reload: no change\n";
  }
}

void print_nodes(const reply& rep) {
  if (rep.nodes.empty()) {
    std::cout << "no nodes\n";
    return;
  }
  std::vector<std::vector<std::string>> rows{
      {"NAME", "ROLE", "STATE", "LABELS", "REPLICAS"}};
  for (auto& n : rep.nodes) {
    std::string labels;
    for (auto& [k, v] : n.labels) {
      if (!labels.empty()) {
        labels += ',';
      }
      labels += k + '=' + v;
    }
    std::string replicas;
    for (auto& [m, count] : n.replicas) {
      if (!replicas.empty()) {
        replicas += ',';
      }
      replicas += m + '=' + std::to_string(count);
    }
    rows.push_back({n.name, n.role, n.state, labels.empty() ? "-" : labels,
                    replicas.empty() ? "-" : replicas});
  }
  auto lines = table_lines(rows);
  std::cout << lines[0] << '\n';
  for (size_t i = 0; i < rep.nodes.size(); ++i) {
    std::cout << lines[i + 1] << '\n';
    // Each GPU on a line of its own under its node: a column would not
    // hold several of them.
    for (auto& d : rep.nodes[i].devices) {
      std::string replicas;
      for (auto& [m, count] : d.replicas) {
        if (!replicas.empty()) {
          replicas += ',';
        }
        replicas += m + '=' + std::to_string(count);
      }
      std::cout << "  " << d.name << "  "
                << (d.product.empty() ? "-" : d.product) << "  "
                << human_bytes(d.used_bytes) << " used of "
                << human_bytes(d.total_bytes) << "  replicas "
                << (replicas.empty() ? "-" : replicas) << '\n';
    }
  }
}

void print_infer(const reply& rep, std::chrono::microseconds round_trip) {
  std::cout << "status   " << to_string(rep.code) << '\n';
  if (rep.source != reply_source::none) {
    std::cout << "source   " << to_string(rep.source) << '\n';
  }
  if (!rep.model.empty() || rep.version) {
    std::cout << "model    " << (rep.model.empty() ? "-" : rep.model);
    if (rep.version) {
      std::cout << " version " << *rep.version;
    }
    std::cout << '\n';
  }
  if (!rep.node.empty()) {
    std::cout << "node     " << rep.node << '\n';
  }
  std::cout << "timing   ";
  if (rep.timing_us) {
    std::cout << "queue " << rep.timing_us->queue_us << " us, compute "
              << rep.timing_us->compute_us << " us, total "
              << rep.timing_us->total_us << " us; ";
  }
  std::cout << "round trip " << round_trip.count() << " us\n";
  for (auto& t : rep.outputs) {
    std::cout << "output   " << tensor_text(t, 16) << '\n';
  }
}

} // namespace shoal::ctl
