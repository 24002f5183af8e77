#include "net/gateway/access.hpp"

namespace shoal {

bool is_admin_op(op_kind op) noexcept {
  return op == op_kind::load || op == op_kind::unload || op == op_kind::drain ||
         op == op_kind::reload;
}

std::string access_refusal(op_kind op, const client_peer& peer,
                           const access_policy& policy) {
  if (!is_admin_op(op)) {
    return {};
  }
  auto what = std::string{"op '"} + std::string{to_string(op)} + "'";
  if (policy.curve) {
    if (peer.admin) {
      return {};
    }
    return what + " needs a client key with role = \"admin\" (client '" +
           peer.key_name + "' is not an admin)";
  }
  if (peer.local || policy.admin_from_any) {
    return {};
  }
  return what + " is accepted only from this machine (loopback) when the "
                "gateway has no CURVE keys; set security.curve_secret_key_"
                "file and use an admin key, or security.admin_from = \"any\"";
}

} // namespace shoal
