#include "core/env.h"

#include <cstdlib>
#include <string>

namespace ds {

bool env_switch(const char* name) {
  const char* e = std::getenv(name);
  return !(e && std::string(e) == "0");
}

bool env_opt_in(const char* name) {
  const char* e = std::getenv(name);
  return e && std::string(e) == "1";
}

}  // namespace ds
