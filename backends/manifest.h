// The manifest (formats/manifest.proto): assembled from the IR and what the backend wrote, written as
// fp4c-manifest.json with protobuf's JSON mapping, and read back by `fp4c inspect` and the verifier.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "backends/artifact.h"
#include "base/stage_clock.h"
#include "base/expected.h"
#include "ir/model.h"
#include "manifest.pb.h"

namespace fp4c::backends {

inline constexpr const char* kManifestFile = "fp4c-manifest.json";

struct ManifestInputs {
  std::string tool_version;
  std::string command_line;
  std::string model_dir;
  std::string source_format;                   // "safetensors" or "gguf"
  std::string source_file;                     // the GGUF file's name
  std::vector<std::string> dequantized_types;  // GGUF block formats the reference is the F32 dequantization of
  std::string kept_tensors_written_as;  // "BF16" where the kept tensors are not written as read
  manifest::Options options;
  std::vector<WrittenFile> inputs;              // files of the source checkpoint, relative names
  std::vector<WrittenFile> outputs;             // files of the artifact, relative names
  std::vector<WrittenTensor> output_tensors;
  // The artifact tensor names each source tensor became.
  std::vector<std::pair<ir::TensorId, std::string>> outputs_of_source;
  std::vector<StageCostFigures> stages;
  int threads = 1;
  double price_per_hour = 0;
};

manifest::Manifest build_manifest(const ir::Model& model, const ManifestInputs& in);

Status write_manifest(const manifest::Manifest& m, const std::string& path);
Expected<manifest::Manifest> read_manifest(const std::string& path);

manifest::Hash to_proto(const hash::Digest& d);

}  // namespace fp4c::backends
