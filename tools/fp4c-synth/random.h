// Counter-based random numbers: every draw is a pure function of (key, counter), so any element of
// any tensor can be made by any thread in any order, and the output never depends on the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string_view>

namespace fp4c::synth {

// SplitMix64's finalizer: a bijection on 64 bits with full avalanche.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The counter-th output of a SplitMix64 stream whose state starts at key.
constexpr uint64_t random_at(uint64_t key, uint64_t counter) {
  return mix64(key + (counter + 1) * 0x9E3779B97F4A7C15ull);
}

// A key for one stream of one tensor: the seed, the model (preset) name, the tensor's name (so a
// tensor's values do not depend on which other tensors exist, e.g. under --layers) and a stream.
constexpr uint64_t stream_key(uint64_t seed, std::string_view model, std::string_view name, uint64_t stream) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of "model/name"
  auto add = [&h](char c) { h = (h ^ uint8_t(c)) * 0x100000001b3ull; };
  for (char c : model) add(c);
  add('/');
  for (char c : name) add(c);
  return mix64(mix64(seed ^ 0x6a09e667f3bcc909ull) ^ h) + mix64(stream + 0x3c6ef372fe94f82bull);
}

// Uniform in [0, 1) with 53 random bits.
inline double uniform_at(uint64_t key, uint64_t counter) {
  return double(random_at(key, counter) >> 11) * 0x1.0p-53;
}

// Standard normal (Box-Muller on two draws).
inline double normal_at(uint64_t key, uint64_t counter) {
  const double u1 = 1.0 - uniform_at(key, 2 * counter);  // (0, 1]
  const double u2 = uniform_at(key, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace fp4c::synth
