// Paging advice for memory-mapped inputs: stream a checkpoint far larger than RAM with bounded RSS.
#pragma once

#include <cstddef>
#include <span>

namespace fp4c {

// Map these pages into the process now, in one call (cheaper than one page fault per page).
void advise_populate(std::span<const std::byte> bytes);
// Drop these pages from this process's resident set (the whole pages inside the range).
void advise_dontneed(std::span<const std::byte> bytes);

}  // namespace fp4c
