// The shoald command as a function, so that a program which adds its own
// backends (one registration line, gpu/registry.hpp) runs the same node:
//   int main(int argc, char** argv) { return shoal::shoald_main(argc, argv); }
#pragma once

namespace shoal {

// Parses the command line, loads and checks the configuration, and runs a
// node until it drains. Returns the process exit code: 0 after a drain, 1
// when the node cannot start, 2 on a usage or configuration error, 70 when
// the supervisor escalates.
int shoald_main(int argc, char** argv);

} // namespace shoal
