// shoald: one shoal node. With no arguments, a standalone node with every
// role and the example models on tcp://127.0.0.1:5555, metrics on
// http://127.0.0.1:9310/metrics.
#include "runtime/node/shoald.hpp"

int main(int argc, char** argv) {
  return shoal::shoald_main(argc, argv);
}
