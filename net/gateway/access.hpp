// Who may run which op. Admin ops (they change what the cluster serves or
// stop a node) need an admin: with CURVE a key whose role is "admin";
// without CURVE a peer on this machine (loopback), unless the operator
// opened them to any address (security.admin_from = "any").
#pragma once

#include <string>

#include "net/gateway/client_socket.hpp"
#include "net/wire/message.hpp"

namespace shoal {

// The ops that need an admin. Every new admin op is one more line here.
bool is_admin_op(op_kind op) noexcept;

struct access_policy {
  // The gateway requires CURVE: peers carry their key's name and role.
  bool curve = false;
  // Without CURVE: admin ops from any address, not only loopback.
  bool admin_from_any = false;
};

// Empty when `peer` may run `op`; otherwise the reason for a
// PERMISSION_DENIED reply.
std::string access_refusal(op_kind op, const client_peer& peer,
                           const access_policy& policy);

} // namespace shoal
