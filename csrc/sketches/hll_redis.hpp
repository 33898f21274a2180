// HyperLogLog with Redis' layout (hyperloglog.c): p = 14, 6-bit registers, MurmurHash64A seed
// 0xadc83b19, 'HYLL' header with cached cardinality, dense and sparse encodings, Ertl's estimator.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sk_values.hpp"

namespace pyperfcore {
namespace sketches {

constexpr int kRedisP = 14;
constexpr int kRedisRegisters = 1 << kRedisP;
constexpr int kRedisMaxValue = 64 - kRedisP + 1;  // 51: the largest count a 64-bit hash can give
constexpr size_t kRedisDenseBytes = 16 + kRedisRegisters * 6 / 8;

class RedisHll {
 public:
  RedisHll();
  // Integers are hashed as their decimal strings, as a Redis client sends them.
  void update(const ValueBatch& b);  // throws std::invalid_argument on invalid text
  void add_hash(uint64_t hash);
  uint64_t estimate() const;
  bool is_sparse() const { return sparse_; }
  std::vector<uint8_t> serialize() const;
  static RedisHll deserialize(const uint8_t* data, size_t len);  // throws std::invalid_argument
  void merge(const RedisHll& other);
  const std::vector<uint8_t>& registers() const { return regs_; }
  size_t sparse_size() const;  // bytes of the sparse encoding of the registers (header included)

 private:
  void touched();
  std::vector<uint8_t> regs_;
  bool sparse_ = true;
  mutable bool card_valid_ = false;
  mutable uint64_t card_ = 0;
  std::vector<uint8_t> image_;  // the bytes this sketch was loaded from, until it changes
};

}  // namespace sketches
}  // namespace pyperfcore
