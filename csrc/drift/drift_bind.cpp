// Python bindings of the drift capability: accumulators and statistics. Buffers are checked
// here; every loop over data runs with the GIL released.
#include <stdexcept>
#include <string>

#include "../bindings/bind.hpp"
#include "../common/buffers.hpp"
#include "drift.hpp"

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
