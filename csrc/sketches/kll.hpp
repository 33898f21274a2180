// KLL quantile sketch (Karnin, Lang, Liberty 2016) for float64, with DataSketches' capacity rule
// (level capacity max(m, round(k * (2/3)^depth)), m = 8, rounded as DataSketches rounds it) and lazy compaction. NaN is ignored.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pyperfcore {
namespace sketches {

class Kll {
 public:
  explicit Kll(int k = 200, uint64_t seed = 0x9e3779b97f4a7c15ULL);  // throws std::invalid_argument
  int k() const { return k_; }
  uint64_t n() const { return n_; }
  bool empty() const { return n_ == 0; }
  double min() const { return min_; }
  double max() const { return max_; }
  size_t num_retained() const;
  void update(const double* x, int64_t n);
  void update(const float* x, int64_t n);
  void merge(const Kll& other);
  // Inclusive rank / quantile (DataSketches' default search criterion).
  void quantiles(const double* q, int64_t n, double* out) const;
  void ranks(const double* x, int64_t n, double* out) const;
  std::vector<uint8_t> serialize() const;
  static Kll deserialize(const uint8_t* d, size_t len);  // throws std::invalid_argument
  // Apache DataSketches kll_sketch image (family 15; kll_doubles_sketch with item_size 8,
  // kll_floats_sketch with 4). Float32 images need every kept value exactly representable.
  std::vector<uint8_t> serialize_ds(int item_size) const;  // throws std::invalid_argument
  // item_size 0: told apart by the image length. The random state starts from `seed`.
  static Kll deserialize_ds(const uint8_t* d, size_t len, int item_size, uint64_t seed);

 private:
  template <class T> void update_impl(const T* x, int64_t n);
  template <class T> void update_items(const T* x, int64_t n);  // one item at a time into level 0
  // Bulk path: a block of kBlock NaN-free order-preserving keys (see kll.cpp). Returns false when
  // the sketch is too small for the block to be compacted at least once (k above the block size).
  bool insert_block(uint64_t* keys, size_t n, uint64_t kmin, uint64_t kmax);  // key extremes
  uint32_t capacity(size_t level) const;
  uint64_t total_capacity() const;
  void compress();
  void sorted_view(std::vector<double>& v, std::vector<uint64_t>& cum) const;
  uint64_t next_random();

  int k_;
  uint64_t n_ = 0;
  double min_ = 0, max_ = 0;
  uint64_t rng_;
  uint32_t cap_by_depth_[64];  // max(m, round(k * (2/3)^depth)), computed once
  std::vector<std::vector<double>> levels_;
  std::vector<double> scratch_;  // level 0 unsorted, higher levels sorted
  std::vector<uint64_t> block_;  // bulk path: the keys of one block
};

}  // namespace sketches
}  // namespace pyperfcore
