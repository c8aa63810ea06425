// The text the synthetic tokenizer is trained on: English prose and dialogue, several programming
// languages, configuration files, numbers, and a few words with non-ASCII letters.
#pragma once

#include <span>
#include <string_view>

namespace fp4c::synth {

// Documents, each a few hundred bytes to a few KB; the trainer sees them joined by blank lines.
std::span<const std::string_view> corpus_documents();

}  // namespace fp4c::synth
