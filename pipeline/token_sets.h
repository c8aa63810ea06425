// Loading a calibration or evaluation set for a checkpoint (its tokenizer when the set holds text),
// with the selection and limits of frontend/calibration.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "frontend/calibration.h"
#include "ir/model.h"

namespace fp4c::pipeline {

struct TokenSetOptions {
  int64_t samples = 0;          // 0: all
  int64_t seq_len = 0;
  uint64_t seed = 0;
  frontend::Packing packing = frontend::Packing::Records;
  uint64_t max_bytes = frontend::kDefaultMaxCalibrationBytes;
  uint64_t max_record_bytes = frontend::kDefaultMaxRecordBytes;
};

// "records" or "chunks", as the command line, the manifest and the statistics keys spell them.
std::string packing_name(frontend::Packing packing);

// Loads `path` for the model in `model_dir`: input_ids records need no tokenizer; text records use
// the checkpoint's tokenizer.json or tokenizer.model.
Expected<frontend::TokenSet> load_tokens(const std::string& path, const std::string& model_dir,
                                         const ir::ModelConfig& config, const TokenSetOptions& o);

}  // namespace fp4c::pipeline
