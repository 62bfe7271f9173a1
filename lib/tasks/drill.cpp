#include "tasks/drill.h"

#include "tasks/random.h"
#include "tasks/voice.h"

namespace ds::tasks {

std::string arithmetic_drill(Rng& rng, int lines) {
  std::string text = "Arithmetic facts:";
  for (int i = 0; i < lines; ++i) {
    const int64_t a = draw_range(rng, 0, 9), b = draw_range(rng, 0, 9);
    std::string line;
    switch (rng.next_below(5)) {
      case 0:
        if (draw_chance(rng, 0.3)) line = S(a) + " + " + S(b) + " + 1 = " + S(a + b + 1);
        else line = S(a) + " + " + S(b) + " = " + S(a + b);
        break;
      case 1: line = S(a + b) + " - " + S(b) + " = " + S(a); break;
      case 2: line = S(a) + " * " + S(b) + " = " + S(a * b); break;
      case 3: {
        const int64_t c = draw_range(rng, 1, 8);
        line = S(a) + " * " + S(b) + " + " + S(c) + " = " + S(a * b + c);
        break;
      }
      default: {
        const int64_t d = draw_range(rng, 2, 9), r = draw_range(rng, 0, d - 1);
        line = S(a * d + r) + " / " + S(d) + " = " + S(a) + ", remainder " + S(r);
        break;
      }
    }
    text += "\n" + line;
  }
  return text;
}

}  // namespace ds::tasks
