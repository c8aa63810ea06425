// safetensors containers: memory-mapped strict reading, streaming writing, sharded indexes.
// Format: u64 little-endian header length N, N bytes of JSON header, then the data section.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/expected.h"

namespace fp4c::safetensors {

struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets relative to the start of the data section
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// Rows [row_begin, row_begin + rows) of a row-major tensor of rank >= 1, as an entry of its own named `name`
// (the same file and dtype; its bytes are a contiguous piece of the whole's). The caller checks the range.
TensorEntry row_slice(const TensorEntry& whole, std::string name, int64_t row_begin, int64_t rows);

// numel x dtype size of a shape; nullopt if a dimension is negative or the product overflows int64.
std::optional<uint64_t> checked_nbytes(DType dtype, std::span<const int64_t> shape);

// A read-only, memory-mapped safetensors file, validated strictly on open: header length within the
// file, well-formed JSON, known dtypes, offsets inside the data section, contiguous from 0 with no
// overlap or gap, each span equal to numel x dtype size. Errors name the file, tensor and offset.
// Like the official library, trailing bytes after the last tensor are an error; stricter than it,
// duplicate JSON keys are too. Unknown keys inside a tensor entry are ignored, as it does.
class File {
 public:
  static Expected<File> open(const std::string& path);
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length
  // Tensors in the order of their offsets.
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The bytes of a tensor (a view into the mapping).
  std::span<const std::byte> bytes(const TensorEntry& t) const;
  // The whole file as mapped (header included), e.g. for hashing.
  std::span<const std::byte> raw() const;
  // Tells the kernel the pages of [t.begin, t.end) are no longer needed (streaming large models):
  // madvise(MADV_DONTNEED) on the whole pages inside the range. bytes(t) stays valid (re-read on use).
  // For a file built in memory (MemoryFile) this does nothing: there is no file to re-read the pages from.
  void release(const TensorEntry& t) const;
  // The same for part of the mapping (whole pages inside `part`): what streaming readers call behind
  // themselves. Never madvise a File's bytes directly: an image in memory would read back as zeros.
  void release(std::span<const std::byte> part) const;
  // Built by MemoryFile: anonymous memory, not a file on disk (path() is only a label).
  bool in_memory() const { return in_memory_; }
  // A lazy image (MemoryFile::finish_lazy): each tensor is made when bytes() first asks for it; raw() holds
  // zeros where no tensor has been made yet.
  bool lazy() const { return lazy_ != nullptr; }
  // Writes tensor t's bytes [offset, offset + out.size()) into `out` (by default all t.nbytes() of them): for
  // a lazy image made straight there, without making it in the image (a streaming reader's way: no fresh
  // pages; a part at a time, a large tensor needs no buffer of its size); otherwise copied from the mapping.
  void produce(const TensorEntry& t, std::span<std::byte> out, uint64_t offset = 0) const;

 private:
  friend class MemoryFile;
  File() = default;
  // Validates a complete image (header and data) in `map` as open() validates a file; takes the mapping.
  static Expected<File> adopt(std::string path, const std::byte* map, uint64_t size, bool in_memory);
  struct Lazy;
  size_t index_of(const TensorEntry& t) const;
  std::string path_;
  bool in_memory_ = false;
  std::shared_ptr<Lazy> lazy_;
  uint64_t file_size_ = 0;
  uint64_t data_offset_ = 0;
  const std::byte* map_ = nullptr;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, size_t, std::less<>> by_name_;
  std::map<std::string, std::string> metadata_;
};

// What a writer is told up front, so the header can be written before any data.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// Streams a safetensors file: the header is written at create(), tensors then arrive in the order of
// the specs, each as one or more chunks. finish() checks every byte arrived, flushes and closes.
// The header's JSON lists "__metadata__" first, then tensors in spec order; it is padded with spaces
// to a multiple of 8 bytes as the official library does.
// Output goes through an 8 MiB buffer; chunks may be of any size and cross tensor boundaries.
// After any error the writer is failed: later calls return that error. A writer destroyed without a
// successful finish() removes its partial file.
class Writer {
 public:
  static Expected<Writer> create(const std::string& path, std::vector<TensorSpec> specs,
                                 const std::map<std::string, std::string>& metadata = {});
  Writer(Writer&&) noexcept;
  Writer& operator=(Writer&&) noexcept;
  ~Writer();
  // Append bytes of the current tensor (the next not yet complete one, in spec order).
  Status write(std::span<const std::byte> chunk);
  Status finish();
  const std::string& path() const;
  // Bytes accepted so far, header included (the file's size once finish() succeeded).
  uint64_t bytes_written() const;
  // XXH3-128 of every byte of the file (header included), computed while writing, in canonical
  // (big-endian) byte order as `xxh128sum` prints it. Valid after a successful finish(); zeros before.
  std::array<uint8_t, 16> file_hash() const;

 private:
  struct Impl;
  explicit Writer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A safetensors file laid out in anonymous memory rather than written to disk, for images fp4c makes of
// other formats (a GGUF's dequantized tensors): the header is laid out at create() exactly as Writer writes
// it, each tensor's bytes are then filled in place (no copy through write()), and finish() validates the
// whole as File::open does and hands it over. Its bytes equal the file Writer would write from the same
// specs and data. Destroyed without finish(), it frees its memory.
class MemoryFile {
 public:
  static Expected<MemoryFile> create(std::string label, const std::vector<TensorSpec>& specs,
                                     const std::map<std::string, std::string>& metadata = {});
  MemoryFile(MemoryFile&&) noexcept;
  MemoryFile& operator=(MemoryFile&&) noexcept;
  ~MemoryFile();
  size_t size() const { return entries_.size(); }
  // The writable bytes of the i-th spec (numel x dtype size).
  std::span<std::byte> tensor(size_t i);
  Expected<File> finish();
  // Makes each tensor only when it is first read: `producer(i, offset, out)` writes the i-th spec's bytes
  // [offset, offset + out.size()) into `out` (the image asks for whole tensors; File::produce for parts).
  // It must not fail (check what it reads before) and may run on several threads at once (for different i).
  using Producer = std::function<void(size_t index, uint64_t offset, std::span<std::byte> out)>;
  Expected<File> finish_lazy(Producer producer);

 private:
  MemoryFile() = default;
  std::string label_;
  std::byte* map_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> entries_;  // data-section [begin, end) of each spec
};

// The header JSON Writer and MemoryFile write for `specs` (compact, "__metadata__" first, tensors in spec
// order, padded with spaces to a multiple of 8 bytes); errors name `path`.
Expected<std::string> header_json(const std::string& path, const std::vector<TensorSpec>& specs,
                                  const std::map<std::string, std::string>& metadata);

// `model.safetensors.index.json`: {"metadata": {...}, "weight_map": {tensor: shard file name}}.
struct Index {
  std::map<std::string, std::string> weight_map;   // tensor -> shard file name (relative)
  std::map<std::string, std::string> metadata;     // e.g. total_size as a string
};
// Reads an index; "metadata" is optional, its "total_size" may be a number (as HF writes it) or a
// string, and is stored as a decimal string. Other metadata values that are not strings are kept as
// their JSON text.
Expected<Index> read_index(const std::string& path);
// Writes the index as Hugging Face does: keys sorted, indent 2, ASCII-escaped, trailing newline;
// metadata.total_size is the number total_size (it overrides index.metadata["total_size"]).
Status write_index(const std::string& path, const Index& index, uint64_t total_size);

// A checkpoint: one model.safetensors or the shards named by model.safetensors.index.json in dir.
// Validates that every shard exists and opens, every tensor named by the index is in its shard, and
// no tensor appears twice. Shards are opened in the order of their names.
// Move-only: refs point into files_, whose storage a move keeps.
class Checkpoint {
 public:
  static Expected<Checkpoint> open(const std::string& dir);
  // A checkpoint of one file already open (e.g. a MemoryFile image).
  static Checkpoint of_file(File file);
  Checkpoint() = default;  // empty
  Checkpoint(Checkpoint&&) noexcept = default;
  Checkpoint& operator=(Checkpoint&&) noexcept = default;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;
  const std::vector<File>& files() const { return files_; }
  struct Ref { const File* file; const TensorEntry* entry; };
  // All tensors, sorted by (file, offset).
  const std::vector<Ref>& tensors() const { return refs_; }
  const Ref* find(std::string_view name) const;
  bool sharded() const { return sharded_; }

 private:
  std::vector<File> files_;
  std::vector<Ref> refs_;
  std::map<std::string, size_t, std::less<>> by_name_;
  bool sharded_ = false;
};

}  // namespace fp4c::safetensors
