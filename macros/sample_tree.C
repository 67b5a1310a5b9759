// sample_tree.C: draw N events from an nfhep flow into a TTree (one branch per feature, plus the context
// values and each event's log p), with no Python.
//
//   root -b -q macros/nfhep_setup.C 'macros/sample_tree.C("model.safetensors", 1000000, "generated.root")'
//   root -b -q macros/nfhep_setup.C \
//     'macros/sample_tree.C("model.safetensors", 100000, "gen.root", "events", 7, "mass=125,width=0.1")'
//
// Arguments: model file, number of events, output file, then optionally
//   tree      tree name (default "events")
//   seed      the random stream (default 0): event i of a stream is the same for any thread count, so
//             sample_tree.C(model, n, out, tree, seed, ctx, k) continues where a run of k events stopped
//   context   for conditional flows, the context of every event: "name=value,..." (any order, every
//             context feature once) or plain values in the model's order "1.5,2"; must be empty for an
//             unconditional flow
//   first     index of the first event in the stream (default 0)
//   nthreads  threads for sampling (nfhep's pool; 0: all cores)
//   log_prob  also write the branch "log_prob" with log p of each event drawn (default true)
//
// Branches are Float_t for a float32 model, Double_t for a float64 one; the events are exactly those of
// nfhep.Engine(model).sample(n, seed=seed, first_index=first, context=...) in Python. The output appears
// only when complete (written to a temporary file, then renamed). Returns 0, or 1 with a message.
#include <TFile.h>
#include <TROOT.h>
#include <TStopwatch.h>
#include <TSystem.h>
#include <TTree.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "nfhep/flow.hpp"
#include "nfhep/parallel.hpp"

namespace nfhep_sample_detail {

inline std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

inline double number(const std::string& text, const std::string& what) {
  const std::string t = trim(text);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || errno == ERANGE || !std::isfinite(v))
    throw std::invalid_argument("context: " + what + " = '" + t + "' is not a finite number");
  return v;
}

/// The context row from "name=value,..." or "v1,v2,...".
inline std::vector<double> parse_context(const std::string& text, const std::vector<std::string>& names) {
  std::vector<double> out(names.size());
  std::vector<bool> set(names.size(), false);
  if (trim(text).empty()) {
    if (names.empty()) return out;
    std::string need;
    for (const auto& n : names) need += (need.empty() ? "" : ",") + n + "=...";
    throw std::invalid_argument("the model is conditional: give its context, e.g. \"" + need + "\"");
  }
  if (names.empty()) throw std::invalid_argument("the model takes no context, but context \"" + text + "\" was given");
  std::stringstream ss(text);
  std::string item;
  std::size_t pos = 0;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    std::size_t j;
    if (eq == std::string::npos) {
      j = pos++;
      if (j >= names.size())
        throw std::invalid_argument("context: more than the model's " + std::to_string(names.size()) + " values");
    } else {
      const std::string name = trim(item.substr(0, eq));
      const auto it = std::find(names.begin(), names.end(), name);
      if (it == names.end()) throw std::invalid_argument("context: the model has no context feature '" + name + "'");
      j = it - names.begin();
    }
    if (set[j]) throw std::invalid_argument("context: '" + names[j] + "' given twice");
    out[j] = number(eq == std::string::npos ? item : item.substr(eq + 1), names[j]);
    set[j] = true;
  }
  for (std::size_t j = 0; j < names.size(); ++j)
    if (!set[j]) throw std::invalid_argument("context: no value for '" + names[j] + "'");
  return out;
}

template <typename T>
void run(const nfhep::Flow& flow, ULong64_t n, const std::string& tmp, const std::string& tree, ULong64_t seed,
         const std::vector<double>& ctx_d, ULong64_t first, bool with_lp) {
  const std::size_t d = flow.num_features(), c = flow.num_context();
  std::unique_ptr<TFile> f(TFile::Open(tmp.c_str(), "RECREATE"));
  if (!f || f->IsZombie()) throw std::runtime_error("cannot create '" + tmp + "'");
  auto* t = new TTree(tree.c_str(), ("events sampled by nfhep from " + flow.path()).c_str());
  t->SetDirectory(f.get());
  std::vector<T> row(d), ctx(ctx_d.begin(), ctx_d.end());
  T lp = 0;
  const char* leaf = std::is_same<T, float>::value ? "/F" : "/D";
  for (std::size_t j = 0; j < d; ++j) t->Branch(flow.features()[j].c_str(), &row[j], (flow.features()[j] + leaf).c_str());
  for (std::size_t j = 0; j < c; ++j)
    t->Branch(flow.context_features()[j].c_str(), &ctx[j], (flow.context_features()[j] + leaf).c_str());
  if (with_lp) t->Branch("log_prob", &lp, (std::string("log_prob") + leaf).c_str());

  const std::size_t chunk = 65536;
  std::vector<T> x(std::min<ULong64_t>(n, chunk) * d), lps(std::min<ULong64_t>(n, chunk));
  ULong64_t done = 0;
  int shown = -1;
  while (done < n) {
    const std::size_t m = std::min<ULong64_t>(chunk, n - done);
    flow.sample(m, seed, first + done, x.data(), c ? ctx.data() : nullptr, c ? 1 : 0, with_lp ? lps.data() : nullptr);
    for (std::size_t i = 0; i < m; ++i) {
      std::copy(x.begin() + i * d, x.begin() + (i + 1) * d, row.begin());
      lp = with_lp ? lps[i] : T(0);
      t->Fill();
    }
    done += m;
    const int pct = int(100.0 * done / n);
    if (n >= 1000000 && pct / 10 != shown) {
      shown = pct / 10;
      std::fprintf(stderr, "sample_tree.C: %llu / %llu events (%d%%)\n", done, n, pct);
    }
  }
  f->cd();
  if (t->Write() <= 0) throw std::runtime_error("writing the tree to '" + tmp + "' failed");
  f->Close();
}

}  // namespace nfhep_sample_detail

int sample_tree(const char* model, Long64_t n, const char* output, const char* tree = "events", ULong64_t seed = 0,
                const char* context = "", ULong64_t first = 0, int nthreads = 0, bool log_prob = true) {
  const std::string out = output ? output : "";
  const std::string tmp = out + ".tmp" + std::to_string(gSystem->GetPid());
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "sample_tree.C: error: %s\n", why.c_str());
    gSystem->Unlink(tmp.c_str());
    if (gROOT->IsBatch()) gSystem->Exit(1);
    return 1;
  };
  try {
    if (!model || !*model || out.empty()) return fail("usage: sample_tree(model, n, output[, tree, seed, context, first, nthreads, log_prob])");
    if (n <= 0) return fail("the number of events must be >= 1, got " + std::to_string(n));
    if (!tree || !*tree) return fail("the tree name is empty");
    if (nthreads < 0) return fail("nthreads must be >= 0 (0: all cores), got " + std::to_string(nthreads));
    const nfhep::Flow flow = nfhep::Flow::load(model);
    const auto ctx = nfhep_sample_detail::parse_context(context ? context : "", flow.context_features());
    if (nthreads > 0) nfhep::set_num_threads(nthreads);
    TStopwatch sw;
    if (flow.is_float32())
      nfhep_sample_detail::run<float>(flow, n, tmp, tree, seed, ctx, first, log_prob);
    else
      nfhep_sample_detail::run<double>(flow, n, tmp, tree, seed, ctx, first, log_prob);
    if (std::rename(tmp.c_str(), out.c_str()) != 0) return fail("cannot rename " + tmp + " to " + out);
    sw.Stop();
    std::printf("sample_tree.C: %lld events (seed %llu, from %llu) of %s (%s %s) -> %s:%s in %.2f s (%.0f events/s)\n",
                n, seed, first, model, flow.family().c_str(), flow.is_float32() ? "float32" : "float64",
                out.c_str(), tree, sw.RealTime(), n / std::max(sw.RealTime(), 1e-9));
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}
