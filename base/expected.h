// Errors are values: every fallible function below tools/ returns Expected<T> or Status.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace fp4c {

// A failure with a message that already names the file, tensor and offset where they apply.
struct Error {
  std::string message;
};

template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}          // NOLINT: implicit on purpose
  Expected(Error error) : v_(std::move(error)) {}      // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Expected<void>.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

inline Error make_error(std::string message) { return Error{std::move(message)}; }

}  // namespace fp4c

// Propagate a failure from an expression yielding Status or Expected<T>.
#define FP4C_TRY(expr)                                  \
  do {                                                  \
    auto&& fp4c_try_result_ = (expr);                   \
    if (!fp4c_try_result_.ok()) return fp4c_try_result_.error(); \
  } while (0)

#define FP4C_CONCAT_INNER(a, b) a##b
#define FP4C_CONCAT(a, b) FP4C_CONCAT_INNER(a, b)
// FP4C_ASSIGN(auto x, expr): declares x from a successful Expected, else returns its error.
#define FP4C_ASSIGN(decl, expr) FP4C_ASSIGN_IMPL(FP4C_CONCAT(fp4c_assign_, __LINE__), decl, expr)
#define FP4C_ASSIGN_IMPL(tmp, decl, expr)     \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.error();          \
  decl = std::move(tmp).value()
