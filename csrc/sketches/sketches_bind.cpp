// Python bindings of the sketches capability: thin wrappers that turn numpy arrays / lists into a
// ValueBatch and release the GIL around every loop over data.
#include <stdexcept>
#include <string>
#include <vector>

#include "../bindings/bind.hpp"
#include "../common/buffers.hpp"
#include "hll_ds.hpp"
#include "hll_redis.hpp"
#include "hll_simd.hpp"
#include "kll.hpp"
#include "sk_hash.hpp"

namespace pyperfcore {
namespace {
using namespace sketches;

// Keeps alive whatever the batch points into while the GIL is released.
struct BatchHolder {
  ValueBatch b;
  py::object keep;
  std::vector<py::object> items;
  std::vector<const char*> ptrs;
  std::vector<int64_t> lens;
};

// values: a C-contiguous 1-D numpy array of int64, float64, 'S' or 'U', or a list of str/bytes.
void make_batch(const py::object& values, BatchHolder& h) {
  h.keep = values;
  if (py::isinstance<py::array>(values)) {
    py::array a = values.cast<py::array>();
    if (a.ndim() != 1 || !(a.flags() & py::array::c_style))
      throw py::value_error("internal: expected a 1-D C-contiguous array");
    h.b.n = a.shape(0);
    h.b.data = a.data();
    h.b.itemsize = a.itemsize();
    const char kind = a.dtype().kind();
    if (kind == 'i' && a.itemsize() == 8) h.b.kind = VKind::i64;
    else if (kind == 'f' && a.itemsize() == 8) h.b.kind = VKind::f64;
    else if (kind == 'S') h.b.kind = VKind::bytes_fixed;
    else if (kind == 'U') h.b.kind = VKind::ucs4_fixed;
    else throw py::type_error("internal: unsupported dtype " + std::string(py::str(a.dtype())));
    return;
  }
  if (!py::isinstance<py::list>(values)) throw py::type_error("internal: expected an array or a list");
  py::list l = values.cast<py::list>();
  const size_t n = l.size();
  h.items.reserve(n);
  h.ptrs.reserve(n);
  h.lens.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    py::object o = l[i];
    if (PyUnicode_Check(o.ptr())) {
      Py_ssize_t len = 0;
      const char* p = PyUnicode_AsUTF8AndSize(o.ptr(), &len);
      if (!p) throw py::error_already_set();
      h.ptrs.push_back(p);
      h.lens.push_back(len);
    } else if (PyBytes_Check(o.ptr())) {
      h.ptrs.push_back(PyBytes_AS_STRING(o.ptr()));
      h.lens.push_back(PyBytes_GET_SIZE(o.ptr()));
    } else {
      throw py::type_error("values must be str or bytes, got " + std::string(py::str(py::type::handle_of(o).attr("__name__"))) +
                           " at index " + std::to_string(i));
    }
    h.items.push_back(std::move(o));
  }
  h.b.kind = VKind::spans;
  h.b.n = static_cast<int64_t>(n);
  h.b.ptrs = h.ptrs.data();
  h.b.lens = h.lens.data();
}

template <class F>
auto rethrow(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::bytes to_pybytes(const std::vector<uint8_t>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

std::string buf_of(const py::bytes& b) { return std::string(b); }

}  // namespace

void bind_sketches(py::module_& m) {
  py::class_<DsHll>(m, "_DsHll")
      .def(py::init([](int lg_k, int type) { return rethrow([&] { return DsHll(lg_k, static_cast<HllType>(type)); }); }))
      .def("update", [](DsHll& s, const py::object& values) {
        BatchHolder h;
        make_batch(values, h);
        py::gil_scoped_release nogil;
        rethrow([&] { s.update(h.b); return 0; });
      })
      .def("estimate", &DsHll::estimate)
      .def("composite_estimate", &DsHll::composite_estimate)
      .def("lower_bound", [](const DsHll& s, int n) { return rethrow([&] { return s.lower_bound(n); }); })
      .def("upper_bound", [](const DsHll& s, int n) { return rethrow([&] { return s.upper_bound(n); }); })
      .def("serialize", [](const DsHll& s, bool compact) { return to_pybytes(s.serialize(compact)); })
      .def_static("deserialize", [](const py::bytes& b) {
        std::string d = buf_of(b);
        return rethrow([&] { return DsHll::deserialize(reinterpret_cast<const uint8_t*>(d.data()), d.size()); });
      })
      .def("copy_as", [](const DsHll& s, int t) { return s.copy_as(static_cast<HllType>(t)); })
      .def_static("union_update", [](DsHll& g, const DsHll& s, int lg_max_k) {
        if (&g == &s) {
          DsHll c(s);
          py::gil_scoped_release nogil;
          DsHll::union_update(g, c, lg_max_k);
          return;
        }
        py::gil_scoped_release nogil;
        DsHll::union_update(g, s, lg_max_k);
      })
      .def_static("union_update_many", [](DsHll& g, const py::sequence& srcs, int lg_max_k) {
        std::vector<const DsHll*> ptrs;
        ptrs.reserve(srcs.size());
        std::vector<DsHll> copies;  // a source that is the gadget itself is read from a copy
        copies.reserve(srcs.size());
        for (size_t i = 0; i < srcs.size(); ++i) {
          const DsHll* p = py::cast<const DsHll*>(srcs[i]);
          if (p == &g) { copies.push_back(g); p = &copies.back(); }
          ptrs.push_back(p);
        }
        py::gil_scoped_release nogil;
        DsHll::union_update_many(g, ptrs.data(), ptrs.size(), lg_max_k);
      })
      .def_static("union_of", [](const DsHll& g, const DsHll& s, int lg_max_k) {
        py::gil_scoped_release nogil;
        return DsHll::union_of(g, s, lg_max_k);
      })
      .def_property_readonly("lg_k", &DsHll::lg_k)
      .def_property_readonly("type", [](const DsHll& s) { return static_cast<int>(s.type()); })
      .def_property_readonly("mode", [](const DsHll& s) { return static_cast<int>(s.mode()); })
      .def_property_readonly("out_of_order", &DsHll::out_of_order)
      .def("is_empty", &DsHll::is_empty)
      .def("registers", [](const DsHll& s) {
        const auto& r = s.registers();
        return py::array_t<uint8_t>(static_cast<py::ssize_t>(r.size()), r.data());
      })
      .def("__copy__", [](const DsHll& s) { return DsHll(s); });

  py::class_<RedisHll>(m, "_RedisHll")
      .def(py::init<>())
      .def("update", [](RedisHll& s, const py::object& values) {
        BatchHolder h;
        make_batch(values, h);
        py::gil_scoped_release nogil;
        rethrow([&] { s.update(h.b); return 0; });
      })
      .def("estimate", &RedisHll::estimate)
      .def("serialize", [](const RedisHll& s) { return to_pybytes(s.serialize()); })
      .def_static("deserialize", [](const py::bytes& b) {
        std::string d = buf_of(b);
        return rethrow([&] { return RedisHll::deserialize(reinterpret_cast<const uint8_t*>(d.data()), d.size()); });
      })
      .def("merge", [](RedisHll& s, const RedisHll& o) { s.merge(o); })
      .def_property_readonly("is_sparse", &RedisHll::is_sparse)
      .def("registers", [](const RedisHll& s) {
        const auto& r = s.registers();
        return py::array_t<uint8_t>(static_cast<py::ssize_t>(r.size()), r.data());
      })
      .def("__copy__", [](const RedisHll& s) { return RedisHll(s); });

  py::class_<Kll>(m, "_Kll")
      .def(py::init([](int k, uint64_t seed) { return rethrow([&] { return Kll(k, seed); }); }))
      .def("update", [](Kll& s, const py::array& a) {
        if (a.ndim() != 1 || !(a.flags() & py::array::c_style)) throw py::value_error("internal: 1-D contiguous");
        if (a.dtype().kind() != 'f' || (a.itemsize() != 8 && a.itemsize() != 4))
          throw py::type_error("internal: KLL takes float32/float64");
        const int64_t n = a.shape(0);
        if (a.itemsize() == 8) {
          const double* p = static_cast<const double*>(a.data());
          py::gil_scoped_release nogil;
          s.update(p, n);
        } else {
          const float* p = static_cast<const float*>(a.data());
          py::gil_scoped_release nogil;
          s.update(p, n);
        }
      })
      .def("merge", [](Kll& s, const Kll& o) {
        if (&s == &o) { Kll c(o); py::gil_scoped_release nogil; s.merge(c); return; }
        py::gil_scoped_release nogil;
        s.merge(o);
      })
      .def("quantiles", [](const Kll& s, const py::array_t<double, py::array::c_style | py::array::forcecast>& q) {
        py::array_t<double> out(q.size());
        double* o = out.mutable_data();
        const double* qp = q.data();
        const int64_t n = q.size();
        rethrow([&] { py::gil_scoped_release nogil; s.quantiles(qp, n, o); return 0; });
        return out;
      })
      .def("ranks", [](const Kll& s, const py::array_t<double, py::array::c_style | py::array::forcecast>& x) {
        py::array_t<double> out(x.size());
        double* o = out.mutable_data();
        const double* xp = x.data();
        const int64_t n = x.size();
        rethrow([&] { py::gil_scoped_release nogil; s.ranks(xp, n, o); return 0; });
        return out;
      })
      .def("serialize", [](const Kll& s) { return to_pybytes(s.serialize()); })
      .def_static("deserialize", [](const py::bytes& b) {
        std::string d = buf_of(b);
        return rethrow([&] { return Kll::deserialize(reinterpret_cast<const uint8_t*>(d.data()), d.size()); });
      })
      .def("serialize_ds", [](const Kll& s, int item_size) {
        return to_pybytes(rethrow([&] { return s.serialize_ds(item_size); }));
      })
      .def_static("deserialize_ds", [](const py::bytes& b, int item_size, uint64_t seed) {
        std::string d = buf_of(b);
        return rethrow([&] { return Kll::deserialize_ds(reinterpret_cast<const uint8_t*>(d.data()), d.size(), item_size, seed); });
      })
      .def_property_readonly("k", &Kll::k)
      .def_property_readonly("n", &Kll::n)
      .def_property_readonly("min", &Kll::min)
      .def_property_readonly("max", &Kll::max)
      .def_property_readonly("num_retained", &Kll::num_retained)
      .def("__copy__", [](const Kll& s) { return Kll(s); });

  // Kernels of the 8-byte-key HLL path with a forced CPU target, for the tests.
  m.def("_ds_murmur3_u64", [](const py::array_t<uint64_t, py::array::c_style | py::array::forcecast>& k, uint64_t seed,
                              const py::object& target) {
    const CpuTarget t = resolve_target(target);
    const int64_t n = k.size();
    py::array_t<uint64_t> h1(n), h2(n);
    const uint64_t* kp = k.data();
    uint64_t *p1 = h1.mutable_data(), *p2 = h2.mutable_data();
    {
      py::gil_scoped_release nogil;
      murmur3_u64_batch(kp, n, seed, p1, p2, t);
    }
    return py::make_tuple(h1, h2);
  }, py::arg("keys"), py::arg("seed"), py::arg("target") = py::none());
  m.def("_ds_coupons_u64", [](const py::array_t<uint64_t, py::array::c_style | py::array::forcecast>& k, bool is_f64,
                              const py::object& target) {
    const CpuTarget t = resolve_target(target);
    const int64_t n = k.size();
    py::array_t<uint32_t> out(n);
    const uint64_t* kp = k.data();
    uint32_t* o = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      ds_coupons_u64(kp, n, is_f64, o, t);
    }
    return out;
  }, py::arg("keys"), py::arg("is_f64"), py::arg("target") = py::none());
  m.def("_ds_hll_candidates", [](const py::array_t<uint64_t, py::array::c_style | py::array::forcecast>& k, bool is_f64,
                                 const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& regs, int lg_k,
                                 const py::object& target) {
    const CpuTarget t = resolve_target(target);
    if (lg_k < 4 || lg_k > 21 || regs.size() != (py::ssize_t(1) << lg_k))
      throw py::value_error("regs must hold 2^lg_k bytes, lg_k in [4, 21]");
    const int64_t n = k.size();
    py::array_t<uint32_t> out(n);
    const uint64_t* kp = k.data();
    const uint8_t* rp = regs.data();
    uint32_t* o = out.mutable_data();
    int64_t c;
    {
      py::gil_scoped_release nogil;
      c = ds_hll_candidates(kp, n, is_f64, rp, lg_k, o, t);
    }
    return py::array_t<uint32_t>(c, o);  // a copy of the first c
  }, py::arg("keys"), py::arg("is_f64"), py::arg("regs"), py::arg("lg_k"), py::arg("target") = py::none());
  m.def("_max_bytes", [](py::array_t<uint8_t, py::array::c_style> r, const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& s,
                         const py::object& target) {
    const CpuTarget t = resolve_target(target);
    if (r.size() != s.size()) throw py::value_error("arrays differ in size");
    max_bytes(r.mutable_data(), s.data(), r.size(), t);
  }, py::arg("r"), py::arg("s"), py::arg("target") = py::none());
  m.def("murmur3_x64_128", [](const py::bytes& b, uint64_t seed) {
    std::string d(b);
    const Hash128 h = murmur3_x64_128(d.data(), d.size(), seed);
    return py::make_tuple(h.h1, h.h2);
  });
  m.def("murmur64a", [](const py::bytes& b, uint64_t seed) {
    std::string d(b);
    return murmur64a(d.data(), d.size(), seed);
  });
}

}  // namespace pyperfcore
