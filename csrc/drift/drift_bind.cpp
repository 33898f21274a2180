// Python bindings of the drift capability: accumulators and statistics. Buffers are checked
// here; every loop over data runs with the GIL released.
#include <cmath>
#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "../bindings/bind.hpp"
#include "../common/buffers.hpp"
#include "drift.hpp"
#include "drift_codes.hpp"

namespace pyperfcore {

namespace {
using namespace drift;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::bytes to_bytes(const std::vector<uint8_t>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

std::string blob_of(const py::object& b) {
  if (!py::isinstance<py::bytes>(b) && !py::isinstance<py::bytearray>(b) && !py::isinstance<py::memoryview>(b))
    throw py::type_error("expected bytes, bytearray or memoryview, got " + std::string(py::str(py::type::of(b).attr("__name__"))));
  if (py::isinstance<py::bytes>(b)) return b.cast<std::string>();
  return py::bytes(b).cast<std::string>();
}

template <class T>
py::array_t<T> vec_to_array(const std::vector<T>& v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

// 1-D contiguous float32 / float64 only: the Python layer converts other inputs explicitly.
template <class Acc>
void update_float(Acc& acc, const py::array& x, const py::object& target) {
  if (x.ndim() != 1) throw py::value_error("update expects a 1-D array");
  const CpuTarget t = resolve_target(target);
  if (!(x.flags() & py::array::c_style)) throw py::value_error("update expects a contiguous array");
  const int64_t n = x.shape(0);
  if (x.dtype().is(py::dtype::of<double>())) {
    const double* p = static_cast<const double*>(x.data());
    py::gil_scoped_release nogil;
    acc.update(p, n, t);
  } else if (x.dtype().is(py::dtype::of<float>())) {
    const float* p = static_cast<const float*>(x.data());
    py::gil_scoped_release nogil;
    acc.update(p, n, t);
  } else {
    throw py::type_error("update expects float32 or float64, got " + std::string(py::str(x.dtype())));
  }
}

std::pair<const double*, int64_t> counts_arg(const F64& a, const char* what) {
  if (a.ndim() != 1) throw py::value_error(std::string(what) + " must be 1-D");
  return {a.data(), a.shape(0)};
}

void same_len(int64_t a, int64_t b) {
  if (a != b) throw py::value_error("reference and current count vectors must have the same length");
}

F64 sample(const py::array& x, const char* what) {
  F64 a = F64::ensure(x);
  if (!a) throw py::type_error(std::string(what) + " must be a numeric array");
  if (a.ndim() != 1) throw py::value_error(std::string(what) + " must be 1-D");
  return a;
}

KSMethod method_of(const std::string& m) {
  if (m == "auto") return KSMethod::automatic;
  if (m == "exact") return KSMethod::exact;
  if (m == "asymp") return KSMethod::asymp;
  throw py::value_error("method must be 'auto', 'exact' or 'asymp', got '" + m + "'");
}

KSAlternative alternative_of(const std::string& a) {
  if (a == "two-sided") return KSAlternative::two_sided;
  if (a == "less") return KSAlternative::less;
  if (a == "greater") return KSAlternative::greater;
  throw py::value_error("alternative must be 'two-sided', 'less' or 'greater', got '" + a + "'");
}

// A StringCoder shared with Python. Its mutex is only ever waited for with the GIL released
// (lock_coder), so a thread holding it may re-take the GIL without deadlock.
struct PyStringCoder {
  StringCoder c;
  std::mutex mu;
};

std::unique_lock<std::mutex> lock_coder(PyStringCoder& sc) {
  std::unique_lock<std::mutex> lk(sc.mu, std::defer_lock);
  py::gil_scoped_release nogil;
  lk.lock();
  return lk;
}

// Object items are classified under the GIL and their bytes copied (text as UTF-8) into a
// reusable arena, chunk by chunk; each chunk is then hashed with the GIL released, on memory no
// other thread can free. None and float NaN are missing items.
enum class ObjClass { text, bytes, missing, other };

inline ObjClass classify(PyObject* o) {
  if (o == nullptr || o == Py_None) return ObjClass::missing;
  if (PyUnicode_Check(o)) return ObjClass::text;
  if (PyBytes_Check(o)) return ObjClass::bytes;
  if (PyFloat_Check(o) && std::isnan(PyFloat_AS_DOUBLE(o))) return ObjClass::missing;
  return ObjClass::other;
}

// Writes cp as UTF-8 at q (room for 4 bytes); returns the bytes written.
inline size_t put_utf8(uint32_t cp, uint8_t* q) {
  if (cp < 0x80) {
    q[0] = static_cast<uint8_t>(cp);
    return 1;
  }
  if (cp < 0x800) {
    q[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
    q[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    q[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
    q[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    q[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 3;
  }
  q[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
  q[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
  q[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
  q[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
  return 4;
}

struct Spans {
  static constexpr int64_t kChunk = 8192;
  static constexpr int64_t kAhead = 32;  // prefetch distance in items
  std::vector<uint8_t> arena = std::vector<uint8_t>(kChunk * 8 + 64);
  std::vector<int64_t> off = std::vector<int64_t>(kChunk + 1);
  std::vector<uint8_t> kinds = std::vector<uint8_t>(kChunk);

  // Items[0], items[step], ... (m <= kChunk of them) into the arena, keeping 8 readable bytes
  // past the last one (StringCoder::encode_spans). The loop keeps its pointers in locals: byte
  // stores could alias the vectors' members otherwise, and the compiler would reload them.
  bool gather(PyObject* const* items, int64_t step, int64_t m) {
    uint8_t* a = arena.data();
    size_t cap = arena.size(), used = 0;
    int64_t* of = off.data();
    uint8_t* kd = kinds.data();
    for (int64_t i = 0; i < m; ++i) {
      if (i + kAhead < m) {  // objects are scattered in memory; a str's header and data may span 2 lines
        const char* q = reinterpret_cast<const char*>(items[(i + kAhead) * step]);
        __builtin_prefetch(q);
        __builtin_prefetch(q + 48);
      }
      PyObject* o = items[i * step];
      KeyKind k = KeyKind::missing;
      switch (classify(o)) {
        case ObjClass::text: {
#if PY_VERSION_HEX < 0x030C0000
          if (PyUnicode_READY(o) < 0) throw py::error_already_set();
#endif
          const size_t len = static_cast<size_t>(PyUnicode_GET_LENGTH(o));
          if (used + 4 * len + 24 > cap) {
            arena.resize(std::max(cap * 2, used + 4 * len + 24));
            a = arena.data(), cap = arena.size();
          }
          if (PyUnicode_IS_ASCII(o)) {
            const uint8_t* d = static_cast<const uint8_t*>(PyUnicode_DATA(o));
            // Short categories: one 16-byte copy whatever their length (a loop of varying length
            // costs a mispredicted branch per item). Reading past the string's end is safe only
            // inside the page that holds it.
            if (len <= 16 && (reinterpret_cast<uintptr_t>(d) & 4095) <= 4096 - 16) {
              std::memcpy(a + used, d, 16);
            } else {
              std::memcpy(a + used, d, len);
            }
            used += len;
          } else {
            const int kind = PyUnicode_KIND(o);
            const void* d = PyUnicode_DATA(o);
            for (size_t j = 0; j < len; ++j) used += put_utf8(PyUnicode_READ(kind, d, j), a + used);
          }
          k = KeyKind::text;
          break;
        }
        case ObjClass::bytes: {
          const size_t len = static_cast<size_t>(PyBytes_GET_SIZE(o));
          if (used + len + 8 > cap) {
            arena.resize(std::max(cap * 2, used + len + 8));
            a = arena.data(), cap = arena.size();
          }
          std::memcpy(a + used, PyBytes_AS_STRING(o), len);
          used += len;
          k = KeyKind::bytes;
          break;
        }
        case ObjClass::missing:
          break;
        case ObjClass::other:
          return false;
      }
      kd[i] = static_cast<uint8_t>(k);
      of[i + 1] = static_cast<int64_t>(used);
    }
    return true;
  }
};

// Codes (codes != nullptr) or counts of a 1-D numpy 'U' / 'S' / object array or a list / tuple.
// Returns false when an object item is not str, bytes, None or a float NaN; with insert, keys of
// the items before it may then have been added (callers discard such a coder). Each object is
// read once: classified and copied in the same pass.
bool code_values(PyStringCoder& sc, const py::object& values, bool insert, int64_t* codes,
                 std::vector<int64_t>& counts) {
  PyObject* const* items = nullptr;  // object items at items[i * step]
  int64_t n = 0, step = 1;
  py::array keep;
  if (py::isinstance<py::array>(values)) {
    keep = values.cast<py::array>();
    if (keep.ndim() != 1) throw py::value_error("expected a 1-D array, got " + std::to_string(keep.ndim()) + "-D");
    const char kind = keep.dtype().kind();
    n = keep.shape(0);
    if (kind == 'U' || kind == 'S') {
      if (kind == 'U' && !keep.dtype().attr("isnative").cast<bool>())
        throw py::value_error("'U' arrays must be in native byte order");
      const uint8_t* base = static_cast<const uint8_t*>(keep.data());
      const int64_t stride = keep.strides(0), itemsize = keep.itemsize();
      auto lk = lock_coder(sc);
      py::gil_scoped_release nogil;  // invalid_argument (a bad code point) -> ValueError
      if (codes) sc.c.encode_fixed(base, n, stride, itemsize, kind == 'U', insert, codes);
      else sc.c.count_fixed(base, n, stride, itemsize, kind == 'U', insert, counts);
      return true;
    }
    if (kind != 'O')
      throw py::type_error("expected a 'U', 'S' or object array, got dtype " + std::string(py::str(keep.dtype())));
    if (keep.strides(0) % static_cast<py::ssize_t>(sizeof(PyObject*)) != 0)
      throw py::value_error("object array strides must be multiples of the pointer size");
    items = static_cast<PyObject* const*>(keep.data());
    step = keep.strides(0) / static_cast<py::ssize_t>(sizeof(PyObject*));
  } else if (PyList_Check(values.ptr()) || PyTuple_Check(values.ptr())) {
    n = static_cast<int64_t>(PySequence_Fast_GET_SIZE(values.ptr()));
    items = PySequence_Fast_ITEMS(values.ptr());
  } else {
    throw py::type_error("expected a numpy array, list or tuple, got " +
                         std::string(py::str(py::type::handle_of(values).attr("__name__"))));
  }
  auto lk = lock_coder(sc);
  Spans s;
  for (int64_t b = 0; b < n; b += Spans::kChunk) {
    const int64_t m = std::min(Spans::kChunk, n - b);
    if (PyList_Check(values.ptr())) {  // the GIL was released: the list may have been resized
      if (PyList_GET_SIZE(values.ptr()) != n) throw py::value_error("the list changed size while being coded");
      items = PySequence_Fast_ITEMS(values.ptr());
    }
    if (!s.gather(items + b * step, step, m)) return false;
    py::gil_scoped_release nogil;
    if (codes) sc.c.encode_spans(s.arena.data(), s.off.data(), s.kinds.data(), m, insert, codes + b);
    else sc.c.count_spans(s.arena.data(), s.off.data(), s.kinds.data(), m, insert, counts);
  }
  return true;
}

}  // namespace

void bind_drift(py::module_& m) {
  m.attr("DRIFT_FORMAT_VERSION") = static_cast<int>(kFormatVersion);

  py::class_<Histogram>(m, "DriftHistogram",
                        "Counts over fixed bin edges; counts = [below, bins..., above, NaN].")
      .def(py::init([](const F64& edges) {
             if (edges.ndim() != 1) throw py::value_error("edges must be 1-D");
             return Histogram(std::vector<double>(edges.data(), edges.data() + edges.shape(0)));
           }),
           py::arg("edges"))
      .def("update", &update_float<Histogram>, py::arg("x"), py::arg("target") = py::none())
      .def("merge", &Histogram::merge, py::arg("other"))
      .def("clear", &Histogram::clear)
      .def_property_readonly("bins", &Histogram::bins)
      .def_property_readonly("edges", [](const Histogram& h) { return vec_to_array(h.edges()); })
      .def_property_readonly("counts", [](const Histogram& h) { return vec_to_array(h.counts()); })
      .def_property_readonly("total", &Histogram::total)
      .def("to_bytes", [](const Histogram& h) { return to_bytes(h.serialize()); })
      .def_static("from_bytes", [](const py::object& b) {
        std::string s = blob_of(b);
        return Histogram::deserialize(reinterpret_cast<const uint8_t*>(s.data()), s.size());
      });

  py::class_<Moments>(m, "DriftMoments", "Count, mean and central moments M2..M4 of finite values; NaN/inf counted apart.")
      .def(py::init<>())
      .def("update", &update_float<Moments>, py::arg("x"), py::arg("target") = py::none())
      .def("merge", [](Moments& a, const Moments& b) { a.merge(b); }, py::arg("other"))
      .def("clear", &Moments::clear)
      .def_property_readonly("state", [](const Moments& mo) {
        const MomentState& s = mo.state();
        py::dict d;
        d["n"] = s.n, d["n_nan"] = s.n_nan, d["n_posinf"] = s.n_posinf, d["n_neginf"] = s.n_neginf;
        d["mean"] = s.mean, d["m2"] = s.m2, d["m3"] = s.m3, d["m4"] = s.m4, d["min"] = s.min, d["max"] = s.max;
        return d;
      })
      .def("to_bytes", [](const Moments& h) { return to_bytes(h.serialize()); })
      .def_static("from_bytes", [](const py::object& b) {
        std::string s = blob_of(b);
        return Moments::deserialize(reinterpret_cast<const uint8_t*>(s.data()), s.size());
      });

  py::class_<CategoryCounts>(m, "DriftCategoryCounts", "Counts of int64 codes: [0..k) categories, then unknown, then missing.")
      .def(py::init<int64_t>(), py::arg("k"))
      .def("update",
           [](CategoryCounts& c, const py::array& codes) {
             if (codes.ndim() != 1) throw py::value_error("codes must be 1-D");
             if (!codes.dtype().is(py::dtype::of<int64_t>()) || !(codes.flags() & py::array::c_style))
               throw py::type_error("codes must be a contiguous int64 array");
             const int64_t* p = static_cast<const int64_t*>(codes.data());
             const int64_t n = codes.shape(0);
             py::gil_scoped_release nogil;
             c.update(p, n);
           },
           py::arg("codes"))
      .def("merge", &CategoryCounts::merge, py::arg("other"))
      .def("clear", &CategoryCounts::clear)
      .def_property_readonly("categories", &CategoryCounts::categories)
      .def_property_readonly("counts", [](const CategoryCounts& c) { return vec_to_array(c.counts()); })
      .def("to_bytes", [](const CategoryCounts& h) { return to_bytes(h.serialize()); })
      .def_static("from_bytes", [](const py::object& b) {
        std::string s = blob_of(b);
        return CategoryCounts::deserialize(reinterpret_cast<const uint8_t*>(s.data()), s.size());
      });

  py::class_<PyStringCoder>(m, "DriftStringCoder",
                            "Hash table from str / bytes values to dense codes in first-seen order.")
      .def(py::init<>())
      .def("encode", [](PyStringCoder& sc, const py::object& values, bool insert) -> py::object {
        const int64_t n = py::len(values);
        py::array_t<int64_t> out(n);
        std::vector<int64_t> unused;
        if (!code_values(sc, values, insert, out.mutable_data(), unused)) return py::none();
        return std::move(out);
      }, py::arg("values"), py::arg("insert") = true,
           "Codes of a 1-D 'U' / 'S' / object array, list or tuple: None and float NaN -> -1, a value not\n"
           "in the table -> -2 unless insert. Returns None when an object item is not str, bytes, None or\n"
           "a float NaN (with insert, the keys of the items before it may have been added).")
      .def("count", [](PyStringCoder& sc, const py::object& values, bool insert) -> py::object {
        std::vector<int64_t> counts;
        if (!code_values(sc, values, insert, nullptr, counts)) return py::none();
        auto lk = lock_coder(sc);
        counts.resize(static_cast<size_t>(sc.c.size()) + 2, 0);
        return vec_to_array(counts);
      }, py::arg("values"), py::arg("insert") = true,
           "Like encode, but returns counts: [unknown, missing, code 0, code 1, ...] (len(self) + 2).")
      .def("__len__", [](PyStringCoder& sc) {
        auto lk = lock_coder(sc);
        return sc.c.size();
      })
      .def_property_readonly("mixed_kinds", [](PyStringCoder& sc) {
        auto lk = lock_coder(sc);
        return sc.c.mixed_kinds();
      })
      .def("values", [](PyStringCoder& sc) {
        auto lk = lock_coder(sc);
        py::list out(sc.c.size());
        for (int64_t i = 0; i < sc.c.size(); ++i) {
          const char* p = reinterpret_cast<const char*>(sc.c.data(i));
          const auto len = static_cast<Py_ssize_t>(sc.c.length(i));
          PyObject* o = sc.c.kind(i) == KeyKind::text ? PyUnicode_DecodeUTF8(p, len, "surrogatepass")
                                                      : PyBytes_FromStringAndSize(p, len);
          if (!o) throw py::error_already_set();
          PyList_SET_ITEM(out.ptr(), i, o);
        }
        return out;
      }, "The keys in code order (str or bytes).")
      .def("sorted_codes", [](PyStringCoder& sc) {
        auto lk = lock_coder(sc);
        return vec_to_array(sc.c.sorted_codes());
      }, "Codes in ascending key order (Python's order for all-str or all-bytes keys).");

  // ---- statistics over count vectors
  m.def("drift_psi", [](const F64& r, const F64& c, double eps) {
    auto a = counts_arg(r, "reference"), b = counts_arg(c, "current");
    same_len(a.second, b.second);
    return psi(a.first, b.first, a.second, eps);
  }, py::arg("ref"), py::arg("cur"), py::arg("eps") = 1e-4);
  m.def("drift_jensen_shannon", [](const F64& r, const F64& c, double base) {
    auto a = counts_arg(r, "reference"), b = counts_arg(c, "current");
    same_len(a.second, b.second);
    return jensen_shannon(a.first, b.first, a.second, base);
  }, py::arg("ref"), py::arg("cur"), py::arg("base") = 0.0);
  m.def("drift_hellinger", [](const F64& r, const F64& c) {
    auto a = counts_arg(r, "reference"), b = counts_arg(c, "current");
    same_len(a.second, b.second);
    return hellinger(a.first, b.first, a.second);
  }, py::arg("ref"), py::arg("cur"));
  m.def("drift_linf", [](const F64& r, const F64& c) {
    auto a = counts_arg(r, "reference"), b = counts_arg(c, "current");
    same_len(a.second, b.second);
    return linf(a.first, b.first, a.second);
  }, py::arg("ref"), py::arg("cur"));
  m.def("drift_chi2_contingency", [](const F64& r, const F64& c) {
    auto a = counts_arg(r, "reference"), b = counts_arg(c, "current");
    same_len(a.second, b.second);
    double dof = 0, p = 1;
    const double s = chi2_contingency(a.first, b.first, a.second, &dof, &p);
    return py::make_tuple(s, p, dof);
  }, py::arg("ref"), py::arg("cur"));
  m.def("drift_ks_binned", [](const F64& r, const F64& c) {
    auto a = counts_arg(r, "reference"), b = counts_arg(c, "current");
    same_len(a.second, b.second);
    double err = 0;
    const double d = ks_binned(a.first, b.first, a.second, &err);
    return py::make_tuple(d, err);
  }, py::arg("ref"), py::arg("cur"));
  m.def("drift_wasserstein_binned", [](const F64& r, const F64& c, const F64& e) {
    auto a = counts_arg(r, "reference"), b = counts_arg(c, "current"), ed = counts_arg(e, "edges");
    same_len(a.second, b.second);
    if (ed.second != a.second + 1) throw py::value_error("edges must have one more entry than the count vectors");
    return wasserstein_binned(a.first, b.first, ed.first, a.second);
  }, py::arg("ref"), py::arg("cur"), py::arg("edges"));
  m.def("drift_chi2_sf", &chi2_sf, py::arg("x"), py::arg("dof"));
  m.def("drift_normal_two_sided", &normal_two_sided, py::arg("z"));

  // ---- sample statistics
  // presorted: both inputs sorted ascending (merge walk). Otherwise `buckets` picks the
  // algorithm (0 automatic, < 0 sort both, >= 3 that many value buckets; see drift.hpp).
  m.def("drift_ks_2samp", [](const py::array& x, const py::array& y, const std::string& method, bool presorted,
                             const std::string& alternative, int64_t buckets, const py::object& target) {
    F64 a = sample(x, "data1"), b = sample(y, "data2");
    const KSMethod km = method_of(method);
    const KSAlternative ka = alternative_of(alternative);
    const CpuTarget t = resolve_target(target);
    const double *pa = a.data(), *pb = b.data();
    const int64_t na = a.shape(0), nb = b.shape(0);
    KSResult r;
    {
      py::gil_scoped_release nogil;
      r = presorted ? ks_2samp_sorted(pa, na, pb, nb, km, ka) : ks_2samp(pa, na, pb, nb, km, ka, t, buckets);
    }
    return py::make_tuple(r.statistic, r.pvalue, r.location, r.sign, r.exact ? "exact" : "asymp");
  }, py::arg("data1"), py::arg("data2"), py::arg("method") = "auto", py::arg("presorted") = false,
     py::arg("alternative") = "two-sided", py::arg("buckets") = 0, py::arg("target") = py::none());
  m.def("drift_ks_2samp_pvalue", [](int64_t n1, int64_t n2, double d, const std::string& method,
                                    const std::string& alternative) {
    bool exact = false;
    double dd = d;
    const KSMethod km = method_of(method);
    const KSAlternative ka = alternative_of(alternative);
    double p;
    {
      py::gil_scoped_release nogil;
      p = ks_2samp_pvalue(n1, n2, d, km, &exact, &dd, ka);
    }
    return py::make_tuple(p, dd, exact ? "exact" : "asymp");
  }, py::arg("n1"), py::arg("n2"), py::arg("d"), py::arg("method") = "auto", py::arg("alternative") = "two-sided");
  m.def("drift_kstwo_sf", &kstwo_sf, py::arg("d"), py::arg("n"));
  m.def("drift_smirnov_sf", &smirnov_sf, py::arg("n"), py::arg("x"));
  m.def("drift_wasserstein", [](const py::array& x, const py::array& y, bool presorted, int64_t buckets,
                                const py::object& target) {
    F64 a = sample(x, "u_values"), b = sample(y, "v_values");
    const CpuTarget t = resolve_target(target);
    const double *pa = a.data(), *pb = b.data();
    const int64_t na = a.shape(0), nb = b.shape(0);
    py::gil_scoped_release nogil;
    return presorted ? wasserstein_sorted(pa, na, pb, nb) : wasserstein(pa, na, pb, nb, t, buckets);
  }, py::arg("u"), py::arg("v"), py::arg("presorted") = false, py::arg("buckets") = 0, py::arg("target") = py::none());
  m.def("drift_small_support", [](const py::array& x, const py::array& y, int64_t cap) -> py::object {
    F64 a = sample(x, "reference"), b = sample(y, "current");
    const double *pa = a.data(), *pb = b.data();
    const int64_t na = a.shape(0), nb = b.shape(0);
    std::vector<double> v;
    std::vector<int64_t> ca, cb;
    bool ok;
    {
      py::gil_scoped_release nogil;
      ok = small_support(pa, na, pb, nb, cap, v, ca, cb);
    }
    if (!ok) return py::none();
    return py::make_tuple(vec_to_array(v), vec_to_array(ca), vec_to_array(cb));
  }, py::arg("reference"), py::arg("current"), py::arg("cap"),
     "(sorted distinct values, reference counts, current counts) of two NaN-free samples when they\n"
     "have at most `cap` distinct values together, else None (found without sorting).");
  m.def("drift_wasserstein_many", [](const py::list& us, const py::list& vs, const py::object& target) {
    if (us.size() != vs.size()) throw py::value_error("need as many u as v samples");
    const CpuTarget t = resolve_target(target);
    const size_t k = us.size();
    std::vector<F64> keep;
    keep.reserve(2 * k);
    std::vector<const double*> pa(k), pb(k);
    std::vector<int64_t> na(k), nb(k);
    for (size_t i = 0; i < k; ++i) {
      for (const py::handle h : {us[i], vs[i]}) {
        F64 a = F64::ensure(h);
        if (!a || a.ndim() != 1) throw py::type_error("each sample must be a 1-D numeric array");
        keep.push_back(std::move(a));
      }
      pa[i] = keep[2 * i].data(), na[i] = keep[2 * i].shape(0);
      pb[i] = keep[2 * i + 1].data(), nb[i] = keep[2 * i + 1].shape(0);
    }
    py::array_t<double> out(static_cast<py::ssize_t>(k));
    double* o = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      wasserstein_many(pa.data(), na.data(), pb.data(), nb.data(), static_cast<int64_t>(k), o, t);
    }
    return out;
  }, py::arg("us"), py::arg("vs"), py::arg("target") = py::none(),
     "Wasserstein-1 of each (us[i], vs[i]) pair, columns spread over the thread pool.");
  m.def("drift_sort", [](const py::array& x) {
    F64 a = sample(x, "x");
    py::array_t<double> out(a.shape(0));
    const double* p = a.data();
    double* o = out.mutable_data();
    const int64_t n = a.shape(0);
    {
      py::gil_scoped_release nogil;
      sort_f64(p, n, o);
    }
    return out;
  }, py::arg("x"));
}

}  // namespace pyperfcore
