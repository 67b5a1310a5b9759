// Test input for tests/test_root_macros.py: a TTree written by ROOT itself (uproot writes one cluster,
// so RDataFrame would make a single task; ROOT's clusters of `cluster` entries make many tasks whose
// boundaries are not multiples of the evaluator's blocks). Branches of several numeric types; entry 5 has
// a NaN feature. Deterministic for a given seed.
//   root -b -q 'tests/macros/make_ntuple.C("in.root", 30000, 1, 777)'
#include <TFile.h>
#include <TRandom3.h>
#include <TTree.h>
#include <cmath>

int make_ntuple(const char* out, Long64_t n, unsigned seed, Long64_t cluster) {
  TFile f(out, "RECREATE");
  TTree t("events", "nfhep test ntuple");
  Float_t x0, x3;
  Double_t x1, c0, c1;
  Int_t x2;
  t.Branch("x0", &x0, "x0/F");
  t.Branch("x1", &x1, "x1/D");
  t.Branch("x2", &x2, "x2/I");
  t.Branch("x3", &x3, "x3/F");
  t.Branch("c0", &c0, "c0/D");
  t.Branch("c1", &c1, "c1/D");
  t.SetAutoFlush(cluster);
  TRandom3 r(seed);
  for (Long64_t i = 0; i < n; ++i) {
    x0 = r.Gaus(0, 1);
    x1 = r.Gaus(0.5, 1.5);
    x2 = int(r.Integer(5)) - 2;
    x3 = r.Uniform(-2, 2);
    c0 = r.Gaus(1, 2);
    c1 = r.Gaus(1, 2);
    if (i == 5) x0 = std::nan("");
    t.Fill();
  }
  t.Write();
  return 0;
}
