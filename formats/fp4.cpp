// FP4 E2M1 codec, written straight from NVFP4.md §1: it is the oracle for every fast encoder.
#include "formats/fp4.h"

#include <cmath>

namespace fp4c::fp4 {

float decode(uint8_t code) {
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitude[code & 0x7];
  return (code & 0x8) ? -m : m;
}

uint8_t encode(float x) {
  if (std::isnan(x)) return 0x0;
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  const float a = std::fabs(x);  // |x| > 6 falls into the last branch: the clamp to 6
  // Thresholds are the midpoints between neighbouring magnitudes; at a midpoint the even code wins,
  // hence "<=" below an odd code's neighbour and "<" below an even code's.
  uint8_t m;
  if (a <= 0.25f) m = 0;        // 0
  else if (a < 0.75f) m = 1;    // 0.5
  else if (a <= 1.25f) m = 2;   // 1
  else if (a < 1.75f) m = 3;    // 1.5
  else if (a <= 2.5f) m = 4;    // 2
  else if (a < 3.5f) m = 5;     // 3
  else if (a <= 5.0f) m = 6;    // 4
  else m = 7;                   // 6
  return uint8_t(sign | m);     // a negative value that rounds to zero keeps its sign: 0x8
}

}  // namespace fp4c::fp4
