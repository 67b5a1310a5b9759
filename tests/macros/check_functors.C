// tests/test_root_macros.py: the functors of nfhep/root.hpp under RDataFrame (IMT with `nthreads`) on a
// 4-feature unconditional float32 model. Writes one line per entry to `out`:
//   <entry> <FlowFunctor<4,float>> <FlowFunctorRVec<double>> <Compute<4,float>(RReader)> <RReader direct>
// (hex floats), then "ERR <what>: <message>" lines for the errors that must be raised.
#include <ROOT/RDataFrame.hxx>
#include <cstdio>
#include <mutex>

#include "nfhep/root.hpp"

int check_functors(const char* model, const char* input, const char* out, int nthreads) {
  if (nthreads > 1) ROOT::EnableImplicitMT(nthreads);
  ROOT::RDataFrame df("events", input);
  const ULong64_t n = *df.Count();
  nfhep::root::FlowFunctor<4, float> f(model);
  nfhep::root::FlowFunctorRVec<double> fv(model);
  nfhep::root::RReader reader(model);
  std::vector<float> a(n), c(n), r(n);
  std::vector<double> b(n);
  std::vector<int> seen(n, 0);
  std::mutex m;
  auto cols = f.columns();  // x0 x1 x2 x3: x1 (double) and x2 (int) need float copies for the typed functor
  ROOT::RDF::RNode d = nfhep::root::define_entry(df, "entry");
  d = d.Define("x1f", "float(x1)").Define("x2f", "float(x2)");
  d.DefineSlot("a", f, {"x0", "x1f", "x2f", "x3"})
      .Define("v", "ROOT::RVecD{double(x0), double(x1f), double(x2f), double(x3)}")
      .DefineSlot("b", fv, {"v"})
      .Define("c", nfhep::root::Compute<4, float>(reader), {"x0", "x1f", "x2f", "x3"})
      .Foreach(
          [&](ULong64_t e, float va, double vb, const std::vector<float>& vc, float x0, float x1, float x2, float x3) {
            const float vr = reader.Compute({x0, x1, x2, x3}).at(0);  // concurrently from every slot
            std::lock_guard<std::mutex> g(m);  // (only for `seen`; the functors need no lock)
            a[e] = va; b[e] = vb; c[e] = vc.at(0); r[e] = vr;
            ++seen[e];
          },
          {"entry", "a", "b", "c", "x0", "x1f", "x2f", "x3"});
  FILE* o = std::fopen(out, "w");
  for (ULong64_t e = 0; e < n; ++e) {
    if (seen[e] != 1) { std::fprintf(o, "ERR entry %llu seen %d times\n", e, seen[e]); continue; }
    std::fprintf(o, "%llu %a %a %a %a\n", e, a[e], b[e], c[e], r[e]);
  }
  auto err = [&](const char* what, auto&& fn) {
    try { fn(); std::fprintf(o, "ERR %s: (no exception)\n", what); }
    catch (const std::exception& ex) { std::fprintf(o, "ERR %s: %s\n", what, ex.what()); }
  };
  err("arity", [&] { nfhep::root::FlowFunctor<3, float> g(model); });
  err("rvec", [&] { fv(0, ROOT::RVecD{1.0, 2.0}); });
  err("compute", [&] { nfhep::root::Compute<5, float>(reader); });
  err("reader", [&] { reader.Compute({1.f, 2.f, 3.f}); });
  err("slot", [&] { f(1000, 0.f, 0.f, 0.f, 0.f); });
  err("model", [&] { nfhep::root::RReader bad{std::string(input)}; });
  std::fclose(o);
  return 0;
}
