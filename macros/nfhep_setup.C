// nfhep_setup.C: make nfhep's C++ engine usable from ROOT: adds the headers (nfhep/flow.hpp,
// nfhep/root.hpp) to the interpreter's include path and loads libnfhep_core, both found through
// `nfhep config` (the Python package ships them). Run it before any macro that includes nfhep headers:
//
//   root -b -q macros/nfhep_setup.C 'macros/eval_ntuple.C("model.safetensors", "ntuple.root", "events", "lp.root")'
//
// or once per session: root [0] .x macros/nfhep_setup.C
//
// Where nfhep is found: $NFHEP_CONFIG (a command that behaves like `nfhep config`, e.g.
// "/path/to/venv/bin/nfhep config"), else `nfhep config` on PATH, else `python3 -m nfhep config`.
// Returns 0 on success, 1 (with a message) when nfhep cannot be found or loaded.
#include <TInterpreter.h>
#include <TString.h>
#include <TSystem.h>

#include <cstdio>
#include <cstdlib>

namespace nfhep_setup_detail {
// The output of `<cmd> <arg>`, or "" when the command fails.
inline TString query(const TString& cmd, const char* arg) {
  TString out = gSystem->GetFromPipe(cmd + " " + arg + " 2>/dev/null; echo \"#rc=$?\"");
  const Ssiz_t at = out.Last('#');
  const bool ok = at != kNPOS && TString(out(at, out.Length())).Contains("#rc=0");
  if (!ok) return "";
  TString val = out(0, at);
  val = val.Strip(TString::kBoth, '\n');
  return val.Strip(TString::kBoth);
}
}  // namespace nfhep_setup_detail

int nfhep_setup() {
  using nfhep_setup_detail::query;
  static bool done = false;
  if (done) return 0;
  TString tried;
  TString inc, lib;
  const char* env = std::getenv("NFHEP_CONFIG");
  const TString candidates[] = {env ? TString(env) : TString(), "nfhep config", "python3 -m nfhep config"};
  for (const TString& cmd : candidates) {
    if (cmd.IsNull()) continue;
    tried += TString("  ") + cmd + "\n";
    inc = query(cmd, "--includedir");
    lib = query(cmd, "--library");
    if (!inc.IsNull() && !lib.IsNull()) break;
  }
  if (inc.IsNull() || lib.IsNull()) {
    std::fprintf(stderr,
                 "nfhep_setup.C: cannot find nfhep; tried:\n%s"
                 "install it (pip install nfhep, or `bash .ci/setup` in its source tree), activate its "
                 "environment, or set NFHEP_CONFIG to \"<venv>/bin/nfhep config\"\n",
                 tried.Data());
    return 1;
  }
  if (gSystem->AccessPathName(inc + "/nfhep/flow.hpp")) {
    std::fprintf(stderr, "nfhep_setup.C: %s/nfhep/flow.hpp does not exist (a broken nfhep install?)\n", inc.Data());
    return 1;
  }
  gInterpreter->AddIncludePath(inc);
  if (gSystem->Load(lib) < 0) {
    std::fprintf(stderr, "nfhep_setup.C: could not load %s\n", lib.Data());
    return 1;
  }
  done = true;
  return 0;
}
