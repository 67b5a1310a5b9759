// nfhep/root.hpp: nfhep flows inside ROOT: RDataFrame functors, a TMVA-style reader, batched evaluation
// of whole trees keyed by entry number. Only for code that has ROOT (macros, ACLiC, experiment code
// linking ROOT); the rest of nfhep never includes it. Header-only on top of nfhep/flow.hpp.
//
//   // in a macro, after macros/nfhep_setup.C (include path + libnfhep_core):
//   #include "nfhep/root.hpp"
//   ROOT::EnableImplicitMT();
//   ROOT::RDataFrame df("events", "ntuple.root");
//   nfhep::root::FlowFunctor<4, float> lp("model.safetensors");          // checks: 4 == D + C
//   auto d = df.DefineSlot("log_prob", lp, lp.columns());                  // columns in model order
//
//   nfhep::root::FlowFunctorRVec<double> lpv("model.safetensors");        // one RVecD of D + C values
//   auto d2 = df.Define("x", "ROOT::RVecD{a, b, c, d}").DefineSlot("log_prob", lpv, {"x"});
//
//   nfhep::root::RReader reader("model.safetensors");                     // as TMVA::Experimental::RReader
//   auto d3 = df.Define("y", nfhep::root::Compute<4, float>(reader), reader.GetVariableNames());
//
// Thread-safety. A Flow is immutable and shared. FlowFunctor and FlowFunctorRVec hold one Workspace per
// RDataFrame slot (DefineSlot guarantees a slot is used by one thread at a time); construct them after
// ROOT::EnableImplicitMT() (or pass the number of slots), copies share the same per-slot workspaces.
// RReader::Compute may be called from any number of threads at once (a pool of workspaces).
//
// Per-event functors evaluate one event per call (the engine's one-row path, ~20-30% of its batched
// throughput). For whole trees, EntryBatch evaluates events in fixed blocks aligned on the entry number
// (see there); macros/eval_ntuple.C uses it.
#pragma once

#include <ROOT/RDataFrame.hxx>
#include <ROOT/RVec.hxx>
#include <TROOT.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nfhep/flow.hpp"

namespace nfhep {
namespace root {

namespace detail {

inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

/// The model's input columns: its features, then its context features.
inline std::vector<std::string> columns(const Flow& f) {
  std::vector<std::string> c = f.features();
  c.insert(c.end(), f.context_features().begin(), f.context_features().end());
  return c;
}

inline unsigned default_slots() {
  const unsigned n = ROOT::GetThreadPoolSize();
  return n == 0 ? 1u : n;
}

template <std::size_t, typename T>
using Always = T;

/// Scratch of one slot: the engine's workspace and one event's inputs, on its own cache lines.
template <typename T>
struct alignas(64) Slot {
  Workspace ws;
  std::vector<T> x, c;
};

/// Evaluates single events on per-slot workspaces (the common part of the functors).
template <typename T>
class SlotEvaluator {
 public:
  SlotEvaluator(Flow flow, unsigned nslots, const char* who) : flow_(std::move(flow)), who_(who) {
    if (nslots == 0) throw std::invalid_argument(std::string(who) + ": the number of slots must be >= 1");
    slots_ = std::make_shared<std::vector<Slot<T>>>(nslots);
    for (auto& s : *slots_) {
      s.ws = flow_.make_workspace(1);
      s.x.resize(flow_.num_features());
      s.c.resize(flow_.num_context());
    }
  }
  const Flow& flow() const { return flow_; }
  std::size_t nslots() const { return slots_->size(); }

  Slot<T>& slot(unsigned s) const {
    if (s >= slots_->size()) {
      throw std::out_of_range(std::string(who_) + ": slot " + std::to_string(s) + " but only " +
                              std::to_string(slots_->size()) +
                              " slots were made; construct the functor after ROOT::EnableImplicitMT(), or "
                              "pass the data frame's GetNSlots()");
    }
    return (*slots_)[s];
  }
  /// log p of the event held in slot s (x and c filled by the caller).
  T eval(Slot<T>& s) const {
    T out;
    flow_.log_prob(s.ws, s.x.data(), 1, &out, flow_.num_context() ? s.c.data() : nullptr);
    return out;
  }
  /// Put value i of the D + C inputs into the slot's buffers.
  void put(Slot<T>& s, std::size_t i, T v) const {
    const std::size_t d = flow_.num_features();
    if (i < d) s.x[i] = v; else s.c[i - d] = v;
  }

 private:
  Flow flow_;
  const char* who_;
  std::shared_ptr<std::vector<Slot<T>>> slots_;
};

template <typename T>
void check_type(const char* who) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "nfhep::root: the column type T must be float or double");
  (void)who;
}

template <typename Seq, typename T>
class FlowFunctorImpl;

template <std::size_t... I, typename T>
class FlowFunctorImpl<std::index_sequence<I...>, T> {
 public:
  static constexpr std::size_t N = sizeof...(I);
  FlowFunctorImpl(Flow flow, unsigned nslots) : ev_(std::move(flow), nslots, "nfhep::root::FlowFunctor") {
    check_type<T>("FlowFunctor");
    const std::size_t want = ev_.flow().num_features() + ev_.flow().num_context();
    if (want != N) {
      std::ostringstream os;
      os << "nfhep::root::FlowFunctor<" << N << ">: the model '" << ev_.flow().path() << "' takes " << want
         << " input columns (features: " << join(ev_.flow().features()) << "; context: "
         << (ev_.flow().num_context() ? join(ev_.flow().context_features()) : std::string("none"))
         << "), not " << N << "; use FlowFunctor<" << want << ">";
      throw std::invalid_argument(os.str());
    }
  }
  /// log p(x | c) of one event: the D feature values then the C context values, in model order.
  T operator()(unsigned slot, Always<I, T>... values) const {
    Slot<T>& s = ev_.slot(slot);
    (ev_.put(s, I, values), ...);
    return ev_.eval(s);
  }
  const Flow& flow() const { return ev_.flow(); }
  /// The column names to pass to DefineSlot: the model's features then its context features.
  std::vector<std::string> columns() const { return detail::columns(ev_.flow()); }

 private:
  SlotEvaluator<T> ev_;
};

}  // namespace detail

/// RDataFrame functor for DefineSlot taking the N = D + C input columns by name (in the order of
/// columns(): features, then context), each of type T (float or double: the columns must have that type;
/// cast others in a Define). Returns log p(x | c) as T. Construction throws std::invalid_argument when N
/// does not match the model, nfhep::FormatError for a bad model file.
template <std::size_t N, typename T = float>
class FlowFunctor : public detail::FlowFunctorImpl<std::make_index_sequence<N>, T> {
  using Base = detail::FlowFunctorImpl<std::make_index_sequence<N>, T>;

 public:
  explicit FlowFunctor(const std::string& model_path, unsigned nslots = detail::default_slots())
      : Base(Flow::load(model_path), nslots) {}
  explicit FlowFunctor(Flow flow, unsigned nslots = detail::default_slots()) : Base(std::move(flow), nslots) {}
};

/// RDataFrame functor for DefineSlot taking one ROOT::RVec<T> column holding the D + C inputs of an event
/// (features then context, model order). The size is checked on every call (std::invalid_argument).
template <typename T = float>
class FlowFunctorRVec {
 public:
  explicit FlowFunctorRVec(const std::string& model_path, unsigned nslots = detail::default_slots())
      : FlowFunctorRVec(Flow::load(model_path), nslots) {}
  explicit FlowFunctorRVec(Flow flow, unsigned nslots = detail::default_slots())
      : ev_(std::move(flow), nslots, "nfhep::root::FlowFunctorRVec") {
    detail::check_type<T>("FlowFunctorRVec");
  }
  T operator()(unsigned slot, const ROOT::RVec<T>& v) const {
    const std::size_t d = ev_.flow().num_features(), c = ev_.flow().num_context();
    if (v.size() != d + c) {
      std::ostringstream os;
      os << "nfhep::root::FlowFunctorRVec: an event has " << v.size() << " values, the model '"
         << ev_.flow().path() << "' takes " << d + c << " (features: " << detail::join(ev_.flow().features())
         << (c ? "; context: " + detail::join(ev_.flow().context_features()) : std::string()) << ")";
      throw std::invalid_argument(os.str());
    }
    detail::Slot<T>& s = ev_.slot(slot);
    for (std::size_t i = 0; i < d + c; ++i) ev_.put(s, i, v[i]);
    return ev_.eval(s);
  }
  const Flow& flow() const { return ev_.flow(); }
  std::vector<std::string> columns() const { return detail::columns(ev_.flow()); }

 private:
  detail::SlotEvaluator<T> ev_;
};

/// The interface of TMVA::Experimental::RReader for an nfhep model: Compute(inputs of one event) returns
/// {log p(x | c)}; GetVariableNames() the input columns (features, then context). Compute is thread-safe.
class RReader {
 public:
  explicit RReader(const std::string& model_path) : RReader(Flow::load(model_path)) {}
  explicit RReader(Flow flow) : flow_(std::move(flow)), pool_(std::make_shared<Pool>()) {}

  std::vector<float> Compute(const std::vector<float>& x) const {
    const std::size_t d = flow_.num_features(), c = flow_.num_context();
    if (x.size() != d + c) {
      std::ostringstream os;
      os << "nfhep::root::RReader::Compute: got " << x.size() << " values, the model '" << flow_.path()
         << "' takes " << d + c << " (" << detail::join(GetVariableNames()) << ")";
      throw std::invalid_argument(os.str());
    }
    Lease lease(*pool_, flow_);
    float out;
    flow_.log_prob(lease.ws(), x.data(), 1, &out, c ? x.data() + d : nullptr);
    return {out};
  }
  std::vector<std::string> GetVariableNames() const { return detail::columns(flow_); }
  const Flow& flow() const { return flow_; }

 private:
  struct Pool {
    std::mutex m;
    std::vector<std::unique_ptr<Workspace>> free;
  };
  class Lease {  // a workspace taken from the pool for one call
   public:
    Lease(Pool& p, const Flow& f) : p_(p) {
      {
        std::lock_guard<std::mutex> g(p_.m);
        if (!p_.free.empty()) {
          ws_ = std::move(p_.free.back());
          p_.free.pop_back();
        }
      }
      if (!ws_) ws_ = std::make_unique<Workspace>(f.make_workspace(1));
    }
    ~Lease() {
      std::lock_guard<std::mutex> g(p_.m);
      p_.free.push_back(std::move(ws_));
    }
    Workspace& ws() { return *ws_; }

   private:
    Pool& p_;
    std::unique_ptr<Workspace> ws_;
  };
  Flow flow_;
  std::shared_ptr<Pool> pool_;
};

namespace detail {
template <typename Seq, typename T>
struct ComputeImpl;
template <std::size_t... I, typename T>
struct ComputeImpl<std::index_sequence<I...>, T> {
  RReader reader;
  std::vector<float> operator()(Always<I, T>... values) const {
    return reader.Compute({static_cast<float>(values)...});
  }
};
}  // namespace detail

/// As TMVA::Experimental::Compute<N, T>(reader): a functor for RDataFrame::Define taking N columns of type
/// T and returning std::vector<float>{log p}. Throws std::invalid_argument when N does not match.
template <std::size_t N, typename T = float>
detail::ComputeImpl<std::make_index_sequence<N>, T> Compute(const RReader& reader) {
  const std::size_t want = reader.flow().num_features() + reader.flow().num_context();
  if (want != N) {
    throw std::invalid_argument("nfhep::root::Compute<" + std::to_string(N) + ">: the model '" +
                                reader.flow().path() + "' takes " + std::to_string(want) + " input columns (" +
                                detail::join(reader.GetVariableNames()) + ")");
  }
  return {reader};
}

/// Defines column `name` holding each event's entry number in its TTree, also under
/// ROOT::EnableImplicitMT() (where rdfentry_ is a unique id but not the entry number). Must be defined on
/// the data frame as it comes from the tree, before any Filter (it counts the events a task processes from
/// the first entry of the task's range). One tree (one file): with a chain the numbers restart per file.
inline ROOT::RDF::RNode define_entry(ROOT::RDF::RNode df, const std::string& name = "nfhep_entry",
                                     unsigned nslots = detail::default_slots()) {
  struct State {
    std::vector<ULong64_t> start, next;
  };
  auto st = std::make_shared<State>();
  st->start.assign(nslots, ~0ull);
  st->next.assign(nslots, 0);
  const std::string first = name + "_task_first";
  return df
      .DefinePerSample(first,
                       [](unsigned, const ROOT::RDF::RSampleInfo& si) {
                         return static_cast<ULong64_t>(si.EntryRange().first);
                       })
      .DefineSlot(name,
                  [st](unsigned slot, ULong64_t task_first) {
                    if (slot >= st->start.size()) {
                      throw std::out_of_range("nfhep::root::define_entry: slot " + std::to_string(slot) +
                                              " beyond the " + std::to_string(st->start.size()) +
                                              " slots given; call it after ROOT::EnableImplicitMT()");
                    }
                    if (st->start[slot] != task_first) {  // a new task began on this slot
                      st->start[slot] = task_first;
                      st->next[slot] = task_first;
                    }
                    return st->next[slot]++;
                  },
                  {first});
}

/// Batched evaluation of a whole tree keyed by entry number: push(slot, entry, inputs) from ForeachSlot,
/// finish() at the end, then values()[entry] is log p of that entry. Events are evaluated in blocks of
/// `block` entries aligned on the entry number (block k = entries k*block .. k*block + block - 1); a block
/// cut by a task boundary is evaluated in pieces, each padded to the full block, so every event goes
/// through exactly the same arithmetic whatever the thread count or the task split: the column is bitwise
/// identical for 1 and N threads. Memory: the result (one T per entry) and one block per slot.
template <typename T>
class EntryBatch {
 public:
  EntryBatch(Flow flow, ULong64_t n_entries, unsigned nslots = detail::default_slots(), std::size_t block = 256)
      : flow_(std::move(flow)), d_(flow_.num_features()), c_(flow_.num_context()), block_(block),
        values_(n_entries), filled_(n_entries, 0), slots_(nslots) {
    detail::check_type<T>("EntryBatch");
    if (block_ == 0 || block_ > 65536) throw std::invalid_argument("nfhep::root::EntryBatch: block must be 1..65536");
    for (auto& s : slots_) {
      s.ws = flow_.make_workspace(block_);
      s.x.assign(block_ * d_, T(0));
      s.c.assign(block_ * c_, T(0));
      s.out.assign(block_, T(0));
      s.used.assign(block_, 0);
    }
  }
  /// The inputs of entry `entry` (D features then C context values, model order).
  void push(unsigned slot, ULong64_t entry, const ROOT::RVec<T>& v) {
    if (slot >= slots_.size()) {
      throw std::out_of_range("nfhep::root::EntryBatch: slot " + std::to_string(slot) + " beyond the " +
                              std::to_string(slots_.size()) + " slots given");
    }
    if (entry >= values_.size()) {
      throw std::out_of_range("nfhep::root::EntryBatch: entry " + std::to_string(entry) + " but the tree has " +
                              std::to_string(values_.size()) + " entries");
    }
    if (v.size() != d_ + c_) {
      throw std::invalid_argument("nfhep::root::EntryBatch: entry " + std::to_string(entry) + " has " +
                                  std::to_string(v.size()) + " values, the model takes " +
                                  std::to_string(d_ + c_) + " (" + detail::join(detail::columns(flow_)) + ")");
    }
    Block& b = slots_[slot];
    const ULong64_t k = entry / block_;
    if (b.count && k != b.k) flush(b);
    b.k = k;
    const std::size_t j = entry % block_;
    if (b.used[j]) duplicate(entry);
    b.used[j] = 1;
    ++b.count;
    std::copy(v.begin(), v.begin() + d_, b.x.begin() + j * d_);
    std::copy(v.begin() + d_, v.end(), b.c.begin() + j * c_);
  }
  /// Evaluate what is left in every slot and check that each entry was pushed exactly once.
  void finish() {
    for (auto& b : slots_)
      if (b.count) flush(b);
    ULong64_t missing = 0, first = 0;
    for (ULong64_t e = values_.size(); e-- > 0;)
      if (filled_[e] != 1) ++missing, first = e;
    if (missing) {
      throw std::runtime_error("nfhep::root::EntryBatch: " + std::to_string(missing) + " of " +
                               std::to_string(values_.size()) + " entries were not evaluated (first: entry " +
                               std::to_string(first) + "); was the entry column defined before a Filter?");
    }
  }
  const std::vector<T>& values() const { return values_; }
  const Flow& flow() const { return flow_; }

 private:
  struct alignas(64) Block {
    Workspace ws;
    std::vector<T> x, c, out;
    std::vector<unsigned char> used;
    ULong64_t k = 0;
    std::size_t count = 0;
  };
  [[noreturn]] void duplicate(ULong64_t entry) const {
    throw std::runtime_error("nfhep::root::EntryBatch: entry " + std::to_string(entry) + " pushed twice");
  }
  void flush(Block& b) {
    // Rows not pushed are padding (a copy of a pushed row keeps them inside the support): results for
    // the pushed rows do not depend on them, only the block shape matters.
    std::size_t src = 0;
    while (!b.used[src]) ++src;
    for (std::size_t j = 0; j < block_; ++j) {
      if (b.used[j]) continue;
      std::copy(b.x.begin() + src * d_, b.x.begin() + (src + 1) * d_, b.x.begin() + j * d_);
      std::copy(b.c.begin() + src * c_, b.c.begin() + (src + 1) * c_, b.c.begin() + j * c_);
    }
    flow_.log_prob(b.ws, b.x.data(), block_, b.out.data(), c_ ? b.c.data() : nullptr);
    const ULong64_t base = b.k * block_;
    for (std::size_t j = 0; j < block_; ++j) {
      if (!b.used[j]) continue;
      const ULong64_t e = base + j;
      if (e >= values_.size()) break;
      if (filled_[e]) duplicate(e);
      values_[e] = b.out[j];
      filled_[e] = 1;
    }
    std::fill(b.used.begin(), b.used.end(), 0);
    b.count = 0;
  }

  Flow flow_;
  std::size_t d_, c_, block_;
  std::vector<T> values_;
  std::vector<unsigned char> filled_;
  std::vector<Block> slots_;
};

}  // namespace root
}  // namespace nfhep
