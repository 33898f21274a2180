// HyperLogLog with the state machine, estimators and serialized image of Apache DataSketches'
// hll_sketch / hll_union (serVer 1, family 7): LIST -> SET -> HLL modes, HLL_4/6/8 targets,
// HIP estimator for one stream, composite estimator after a union.
//
// Registers are kept as one byte per slot whatever the target type; the HLL_4 nibbles and
// HLL_6 bit packing are produced when serializing. For HLL_4 the exception (aux) hash table is
// maintained incrementally because its slot order is part of the serialized image.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "sk_values.hpp"

namespace pyperfcore {
namespace sketches {

enum class HllType : uint8_t { hll4 = 0, hll6 = 1, hll8 = 2 };
enum class HllMode : uint8_t { list = 0, set = 1, hll = 2 };

constexpr uint64_t kDsSeed = 9001;
constexpr int kDsMinLgK = 4;
constexpr int kDsMaxLgK = 21;

// Coupon of a 128-bit hash: value (1..63) << 26 | low 26 bits of h1.
uint32_t ds_coupon(uint64_t h1, uint64_t h2);
// Coupons of values [begin, end) of a batch, DataSketches' hashing rules (empty strings -> 0).
// Returns false if the batch holds invalid text.
bool ds_coupons(const ValueBatch& b, int64_t begin, int64_t end, uint32_t* out);

class DsHll {
 public:
  DsHll(int lg_k, HllType type);  // throws std::invalid_argument

  int lg_k() const { return lg_k_; }
  HllType type() const { return type_; }
  HllMode mode() const { return mode_; }
  bool out_of_order() const { return ooo_; }
  bool is_empty() const;

  void update(const ValueBatch& b);  // throws std::invalid_argument on invalid text
  void coupon_update(uint32_t coupon);

  double estimate() const;
  double composite_estimate() const;
  double lower_bound(int n_std) const;
  double upper_bound(int n_std) const;

  std::vector<uint8_t> serialize(bool compact) const;
  static DsHll deserialize(const uint8_t* data, size_t len);  // throws std::invalid_argument

  // The same sketch under another target type (DataSketches' copyAs).
  DsHll copy_as(HllType type) const;
  // Register values (HLL mode only), for tests and conversions.
  const std::vector<uint8_t>& registers() const { return regs_; }
  const std::vector<uint32_t>& coupon_table() const { return coupons_; }

  // ---- union gadget support (always HLL_8) ----
  static DsHll union_of(const DsHll& gadget, const DsHll& src, int lg_max_k);
  static void union_update(DsHll& gadget, const DsHll& src, int lg_max_k);  // in place
  // union_update with every source in turn, in one call: register maxima are folded in with
  // SIMD and the derived counters rebuilt once, not once per source. Same result.
  static void union_update_many(DsHll& gadget, const DsHll* const* srcs, size_t n, int lg_max_k);

 private:
  friend class DsUnionAccess;
  void update_u64(const uint64_t* keys, int64_t n, bool is_f64);  // int64 / float64 bits
  void apply_coupons(const uint32_t* c, int64_t n);  // in order, any mode
  void promote_list_to_set();
  void promote_to_hll();
  void hll_update(uint32_t slot, uint8_t v);
  void hll4_update(uint32_t slot, uint8_t v);
  void hip_kxq_update(uint8_t old_v, uint8_t new_v);
  void shift_cur_min();
  int set_find(uint32_t coupon) const;
  void set_grow();
  void aux_add(uint32_t slot, uint8_t v);
  void aux_replace(uint32_t slot, uint8_t v);
  int aux_find(uint32_t slot) const;
  double coupon_estimate() const;
  double hll_raw_estimate() const;
  double bitmap_estimate() const;
  void rebuild_kxq_zeros();  // recompute kxq0/kxq1 and the zero count from the registers
  void merge_hll_registers(const DsHll& src);  // this is HLL_8 in HLL mode, src.lg_k >= lg_k
  void max_registers(const DsHll& src);         // the register part of merge_hll_registers
  static DsHll copy_or_downsample(const DsHll& src, int tgt_lg_k);
  static DsHll hll_from_values(const DsHll& src, HllType type);

  uint8_t lg_k_;
  HllType type_;
  HllMode mode_ = HllMode::list;
  bool ooo_ = false;
  bool rebuild_ = false;  // union gadget: registers merged, conversion must rebuild (DataSketches' flag)
  // LIST / SET
  uint8_t lg_arr_ = 3;
  uint32_t count_ = 0;
  std::vector<uint32_t> coupons_;
  // HLL
  std::vector<uint8_t> regs_;
  double hip_ = 0, kxq0_ = 0, kxq1_ = 0;
  uint8_t cur_min_ = 0;
  uint32_t num_at_cur_min_ = 0;
  // HLL_4 exceptions: slot | value << 26, open addressing as DataSketches' AuxHashMap
  bool has_aux_ = false;
  uint8_t lg_aux_ = 0;
  uint32_t aux_count_ = 0;
  std::vector<uint32_t> aux_;
};

}  // namespace sketches
}  // namespace pyperfcore
