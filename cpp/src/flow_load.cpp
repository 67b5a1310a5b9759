// The model-file reader of the inference engine, written from docs/model-format.md: the safetensors
// container, the "nfhep" metadata document, the configuration, and the tensors the configuration implies.
// Everything is validated before use (sizes and offsets before any read, counts before any allocation);
// any problem is an nfhep::FormatError naming the file and what is wrong. Nothing here trusts the file.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "flow_model.hpp"
#include "nfhep/detail/json.hpp"
#include "nfhep/detail/sha256.hpp"

namespace nfhep::detail {
namespace {

using json::Value;

constexpr std::uint64_t kMaxHeader = 100000000;  // as the safetensors reference implementation
constexpr int kReadableVersion = 3;  // and 1, 2 (2 adds preprocessing.kinds and data_range; 3 ensembles)
constexpr int kMaxMembers = 64;      // an ensemble's flows (nfhep.flows.MAX_MEMBERS)
// Sanity limits on the configuration (a file within them still has to hold tensors of these sizes).
constexpr std::int64_t kMaxFeatures = 100000;
constexpr std::int64_t kMaxBijectors = 10000;
constexpr std::int64_t kMaxWidth = 1 << 20;
constexpr std::int64_t kMaxHiddenLayers = 256;
constexpr std::int64_t kMaxKnots = 10000;
constexpr std::uint64_t kMaxElements = (std::uint64_t{1} << 31) - 1;  // per tensor (BLAS int dims)

struct Fail {
  std::string where;
  FormatError operator()(const std::string& msg) const { return FormatError(where + ": " + msg); }
};

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (out.size() > 200) out = out.substr(0, 200) + "...";
  return out + "'";
}

std::string shape_str(const std::vector<std::uint64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::uint64_t le64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// -- typed access to the metadata document ----------------------------------------------------------------
struct Doc {
  const Value& v;
  std::string ctx;  // e.g. "flow"
  Fail fail;

  const Value& get(const char* key) const {
    const Value* p = v.find(key);
    if (!p) throw fail("the 'nfhep' metadata lacks the required key '" + ctx + key + "'");
    return *p;
  }
  std::int64_t integer(const char* key, std::int64_t lo, std::int64_t hi) const {
    const Value& x = get(key);
    if (!x.is_number() || !x.is_integer())
      throw fail("'" + ctx + key + "' must be an integer, got " + describe(x));
    const std::int64_t i = x.as_int64();
    if (i < lo || i > hi)
      throw fail("'" + ctx + key + "' = " + std::to_string(i) + " is out of range [" + std::to_string(lo) + ", " +
                 std::to_string(hi) + "]");
    return i;
  }
  double number(const char* key) const {
    const Value& x = get(key);
    if (!x.is_number()) throw fail("'" + ctx + key + "' must be a number, got " + describe(x));
    const double d = x.as_double();
    if (!std::isfinite(d)) throw fail("'" + ctx + key + "' must be finite, got " + num(d));
    return d;
  }
  bool boolean(const char* key) const {
    const Value& x = get(key);
    if (!x.is_bool()) throw fail("'" + ctx + key + "' must be true or false, got " + describe(x));
    return x.as_bool();
  }
  const std::string& string(const char* key) const {
    const Value& x = get(key);
    if (!x.is_string()) throw fail("'" + ctx + key + "' must be a string, got " + describe(x));
    return x.as_string();
  }
  static std::string describe(const Value& x) {
    std::string t = Value::type_name(x.type());
    if (x.is_number()) t += " " + num(x.as_double());
    if (x.is_string()) t += " " + quoted(x.as_string());
    return t;
  }
  void only_keys(const std::set<std::string>& allowed, const std::string& what) const {
    for (const auto& kv : v.as_object())
      if (!allowed.count(kv.first))
        throw fail(what + " has the key " + quoted(kv.first) +
                   ", which this nfhep engine does not know: it cannot evaluate the model correctly "
                   "(written by a newer nfhep? then upgrade)");
  }
};

// -- the container -----------------------------------------------------------------------------------------
struct TensorInfo {
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;
  std::uint64_t elements = 0;
  bool used = false;
};

std::size_t itemsize(const std::string& code) {
  if (code == "F64" || code == "I64") return 8;
  if (code == "F32" || code == "I32") return 4;
  if (code == "I16") return 2;
  if (code == "I8" || code == "U8" || code == "BOOL") return 1;
  return 0;
}

struct Container {
  std::map<std::string, TensorInfo> tensors;  // sorted byte-wise by name (the checksum's order)
  std::map<std::string, std::string> metadata;
  const unsigned char* data = nullptr;  // data section
  std::uint64_t data_size = 0;
};

Container parse_container(const unsigned char* bytes, std::size_t size, const Fail& fail) {
  if (size < 8)
    throw fail("file is " + std::to_string(size) + " bytes long, too short for a safetensors header");
  const std::uint64_t n = le64(bytes);
  if (n < 2 || n > kMaxHeader)
    throw fail("header length " + std::to_string(n) + " is not plausible (not a safetensors file?)");
  if (n > size - 8)
    throw fail("truncated: the header needs " + std::to_string(n) + " bytes but only " + std::to_string(size - 8) +
               " follow the length");
  Value header;
  try {
    header = json::parse(std::string_view(reinterpret_cast<const char*>(bytes + 8), static_cast<std::size_t>(n)));
  } catch (const json::ParseError& e) {
    throw fail(std::string("the header is not valid UTF-8 JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw fail("the header is not a JSON object");
  Container c;
  c.data = bytes + 8 + n;
  c.data_size = size - 8 - n;
  bool have_meta = false;
  std::vector<std::pair<std::uint64_t, std::string>> starts;
  for (const auto& kv : header.as_object()) {
    const std::string& name = kv.first;
    const Value& e = kv.second;
    if (name == "__metadata__") {
      if (!e.is_object()) throw fail("'__metadata__' is not a string-to-string object: not an nfhep model file");
      for (const auto& m : e.as_object()) {
        if (!m.second.is_string())
          throw fail("'__metadata__' entry " + quoted(m.first) + " is not a string: not an nfhep model file");
        c.metadata[m.first] = m.second.as_string();
      }
      have_meta = true;
      continue;
    }
    const std::string tn = "tensor " + quoted(name);
    if (!e.is_object() || e.as_object().size() != 3 || !e.find("dtype") || !e.find("shape") || !e.find("data_offsets"))
      throw fail(tn + ": header entry must have exactly dtype, shape, data_offsets");
    TensorInfo t;
    const Value& dt = *e.find("dtype");
    if (!dt.is_string() || itemsize(dt.as_string()) == 0)
      throw fail(tn + " has dtype " + Doc::describe(dt) + "; model files hold F64, F32, I64, I32, I16, I8, U8, BOOL");
    t.dtype = dt.as_string();
    const Value& sh = *e.find("shape");
    if (!sh.is_array()) throw fail(tn + ": shape is not a list of sizes");
    if (sh.as_array().size() > 8) throw fail(tn + ": shape has " + std::to_string(sh.as_array().size()) + " dimensions");
    std::uint64_t elems = 1;
    bool zero = false;
    for (const Value& d : sh.as_array()) {
      if (!d.is_number() || !d.is_integer() || d.as_int64() < 0) throw fail(tn + ": shape is not a list of sizes");
      const std::uint64_t k = static_cast<std::uint64_t>(d.as_int64());
      t.shape.push_back(k);
      if (k == 0) zero = true;
      else if (!zero && elems > kMaxElements / k)
        throw fail(tn + ": shape " + shape_str(t.shape) + " is absurdly large");
      else if (!zero) elems *= k;
    }
    t.elements = zero ? 0 : elems;
    const Value& off = *e.find("data_offsets");
    if (!off.is_array() || off.as_array().size() != 2 || !off.as_array()[0].is_integer() ||
        !off.as_array()[1].is_integer() || off.as_array()[0].as_int64() < 0 ||
        off.as_array()[1].as_int64() < off.as_array()[0].as_int64())
      throw fail(tn + ": data_offsets must be two integers 0 <= BEGIN <= END");
    t.begin = static_cast<std::uint64_t>(off.as_array()[0].as_int64());
    t.end = static_cast<std::uint64_t>(off.as_array()[1].as_int64());
    const std::uint64_t nbytes = t.elements * itemsize(t.dtype);
    if (t.end - t.begin != nbytes)
      throw fail(tn + ": " + t.dtype + " " + shape_str(t.shape) + " needs " + std::to_string(nbytes) +
                 " bytes, its offsets span " + std::to_string(t.end - t.begin));
    if (t.end > c.data_size)
      throw fail("truncated: tensor " + quoted(name) + " ends at byte " + std::to_string(t.end) +
                 " of the data section, which has " + std::to_string(c.data_size) + " bytes");
    starts.emplace_back(t.begin, name);
    c.tensors[name] = std::move(t);
  }
  if (!have_meta) throw fail("no string-to-string '__metadata__' in the header: not an nfhep model file");
  // back to back, no gaps, no overlaps, nothing after the last tensor (zero-size tensors sort first at
  // their offset, as in the Python reader)
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> spans;
  for (const auto& kv : c.tensors) spans.emplace_back(kv.second.begin, kv.second.end, kv.first);
  std::sort(spans.begin(), spans.end());
  std::uint64_t pos = 0;
  for (const auto& [b, e, name] : spans) {
    if (b != pos)
      throw fail("tensor " + quoted(name) + " starts at " + std::to_string(b) + ", expected " + std::to_string(pos) +
                 " (overlapping or gapped data)");
    pos = e;
  }
  if (pos != c.data_size)
    throw fail(std::to_string(c.data_size - pos) + " unexpected trailing bytes after the last tensor (corrupted?)");
  return c;
}

std::string checksum_of(const Container& c) {
  Sha256 h;
  for (const auto& [name, t] : c.tensors) {
    h.update(name.data(), name.size());
    const unsigned char z = 0;
    h.update(&z, 1);
    h.update(t.dtype.data(), t.dtype.size());
    h.update(&z, 1);
    // a scalar (shape []) is hashed as shape [1]: what nfhep's writer has always done (numpy's
    // ascontiguousarray makes 0-d arrays 1-d), so every existing file's checksum stays valid
    const std::vector<std::uint64_t> one{1};
    for (std::uint64_t d : (t.shape.empty() ? one : t.shape)) {
      unsigned char b[8];
      for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(d >> (8 * i));
      h.update(b, 8);
    }
    h.update(c.data + t.begin, static_cast<std::size_t>(t.end - t.begin));
  }
  return to_hex(h.finish());
}

// -- the configuration -----------------------------------------------------------------------------------------
struct Config {
  std::string family;
  int D = 0, C = 0, bijectors = 0;
  std::vector<int> hidden;
  Activation act = Activation::relu;
  std::string permutation;
  double dropout = 0;
  bool batch_norm = false, actnorm = false;
  double log_scale_clamp = 3;
  int knots = 0;
  RqsOptions rqs;
  bool autoregressive = false;
  std::vector<Config> members;  // family "ensemble": the member flows (flow fields only)
  // preprocessing
  bool standardize = true;
  std::vector<int> log;
  std::vector<double> lo, hi;  // NaN = open
  // version 2
  std::vector<Special> special;
  std::vector<double> period_a, period_b, shift, spike, cell0, cell1, split;
  std::vector<int> relative_to;  // periodic: the feature it is relative to, -1 none
  std::vector<std::vector<double>> values;
  std::vector<std::vector<double>> q_v, q_u;
};

Activation parse_activation(const std::string& s, const Fail& fail) {
  if (s == "relu") return Activation::relu;
  if (s == "tanh") return Activation::tanh;
  if (s == "elu") return Activation::elu;
  if (s == "gelu") return Activation::gelu;
  if (s == "silu") return Activation::silu;
  if (s == "leaky_relu") return Activation::leaky_relu;
  if (s == "sigmoid") return Activation::sigmoid;
  throw fail("flow.activation " + quoted(s) + " is not supported (relu, tanh, elu, gelu, silu, leaky_relu, sigmoid)");
}

// preprocessing.kinds (version 2): per feature null, periodic, discrete or spike; and data_range.
void parse_kinds(const Value& pre, Config& cfg, const std::vector<char>& is_log, const Fail& fail) {
  const int D = cfg.D;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  cfg.special.assign(D, Special::none);
  cfg.period_a.assign(D, nan);
  cfg.period_b.assign(D, nan);
  cfg.shift.assign(D, 0.0);
  cfg.relative_to.assign(D, -1);
  cfg.spike.assign(D, nan);
  cfg.cell0.assign(D, nan);
  cfg.cell1.assign(D, nan);
  cfg.split.assign(D, nan);
  cfg.values.assign(D, {});
  auto finite = [&](const Value& v, const std::string& what) {
    if (!v.is_number() || !std::isfinite(v.as_double()))
      throw fail(what + " holds " + Doc::describe(v) + ", not a finite number");
    return v.as_double();
  };
  auto pair = [&](const Value* v, const std::string& what) {
    if (!v || !v->is_array() || v->as_array().size() != 2) throw fail(what + " must be a list [low, high]");
    return std::make_pair(finite(v->as_array()[0], what), finite(v->as_array()[1], what));
  };
  if (const Value* dr = pre.find("data_range"); dr && !dr->is_null()) {
    if (!dr->is_array() || static_cast<int>(dr->as_array().size()) != D)
      throw fail("preprocessing.data_range must be null or a list of " + std::to_string(D) + " [min, max] pairs");
    for (int j = 0; j < D; ++j) {
      const std::string what = "preprocessing.data_range[" + std::to_string(j) + "]";
      const auto r = pair(&dr->as_array()[j], what);
      if (!(r.first <= r.second)) throw fail(what + " needs min <= max");
    }
  }
  cfg.q_v.assign(D, {});
  cfg.q_u.assign(D, {});
  if (const Value* qd = pre.find("quantile"); qd && !qd->is_null()) {
    if (!qd->is_array() || static_cast<int>(qd->as_array().size()) != D)
      throw fail("preprocessing.quantile must be null or a list of " + std::to_string(D) + " entries");
    for (int j = 0; j < D; ++j) {
      const Value& q = qd->as_array()[j];
      const std::string at = "preprocessing.quantile[" + std::to_string(j) + "]";
      if (q.is_null()) continue;
      if (!q.is_object()) throw fail(at + " must be null or an object {v, u}");
      Doc e{q, at + ".", fail};
      e.only_keys({"v", "u"}, at);
      for (const char* key : {"v", "u"}) {
        const Value& arr = e.get(key);
        if (!arr.is_array() || arr.as_array().size() < 2 || arr.as_array().size() > 100000)
          throw fail(at + "." + key + " must be a list of at least 2 numbers");
        auto& dst = key[0] == 'v' ? cfg.q_v[j] : cfg.q_u[j];
        for (const Value& t : arr.as_array()) {
          const double d = finite(t, at + "." + key);
          if (!dst.empty() && !(dst.back() < d)) throw fail(at + "." + key + " must be strictly increasing");
          dst.push_back(d);
        }
      }
      if (cfg.q_v[j].size() != cfg.q_u[j].size()) throw fail(at + ": v and u must have the same length");
    }
  }
  const Value* kd = pre.find("kinds");
  if (!kd || kd->is_null()) return;
  if (!kd->is_array() || static_cast<int>(kd->as_array().size()) != D)
    throw fail("preprocessing.kinds must be null or a list of " + std::to_string(D) + " entries");
  for (int j = 0; j < D; ++j) {
    const Value& k = kd->as_array()[j];
    const std::string at = "preprocessing.kinds[" + std::to_string(j) + "]";
    if (k.is_null()) continue;
    if (!k.is_object()) throw fail(at + " must be null or an object");
    Doc e{k, at + ".", fail};
    const std::string& kind = e.string("kind");
    const bool bounded = !std::isnan(cfg.lo[j]) || !std::isnan(cfg.hi[j]);
    if (kind == "periodic") {
      e.only_keys({"kind", "period", "shift", "relative_to"}, at);
      const auto pr = pair(k.find("period"), at + ".period");
      if (!(pr.first < pr.second)) throw fail(at + ".period needs low < high");
      cfg.shift[j] = finite(e.get("shift"), at + ".shift");
      if (const Value* rel = k.find("relative_to"); rel && !rel->is_null())
        cfg.relative_to[j] = static_cast<int>(e.integer("relative_to", 0, D - 1));
      if (is_log[j] || std::isnan(cfg.lo[j]) || std::isnan(cfg.hi[j]) || !(cfg.lo[j] <= pr.first) ||
          !(pr.second <= cfg.hi[j]))
        throw fail(at + ": a periodic feature needs two-sided preprocessing.bounds containing its period");
      cfg.special[j] = Special::periodic;
      cfg.period_a[j] = pr.first;
      cfg.period_b[j] = pr.second;
    } else if (kind == "discrete") {
      e.only_keys({"kind", "values"}, at);
      const Value& vs = e.get("values");
      if (!vs.is_array() || vs.as_array().empty() || vs.as_array().size() > 1000000)
        throw fail(at + ".values must be a non-empty list of numbers");
      for (const Value& v : vs.as_array()) {
        const double d = finite(v, at + ".values");
        if (!cfg.values[j].empty() && !(cfg.values[j].back() < d)) throw fail(at + ".values must be increasing");
        cfg.values[j].push_back(d);
      }
      if (is_log[j] || bounded) throw fail(at + ": a discrete feature cannot also be log-transformed or bounded");
      cfg.special[j] = Special::discrete;
    } else if (kind == "spike") {
      e.only_keys({"kind", "value", "cell", "split"}, at);
      cfg.spike[j] = finite(e.get("value"), at + ".value");
      const auto c = pair(k.find("cell"), at + ".cell");
      cfg.cell0[j] = c.first;
      cfg.cell1[j] = c.second;
      cfg.split[j] = finite(e.get("split"), at + ".split");
      if (!(c.first < c.second && c.second <= cfg.split[j])) throw fail(at + " needs cell [c0, c1] with c0 < c1 <= split");
      cfg.special[j] = Special::spike;
    } else {
      throw fail(at + ".kind " + quoted(kind) + " is not periodic, discrete or spike");
    }
  }
  // a relative angle: x_j - x_r, r another periodic feature of the same period, not itself relative
  for (int j = 0; j < D; ++j) {
    const int r = cfg.relative_to[j];
    if (r < 0) continue;
    if (r == j || cfg.special[r] != Special::periodic || cfg.relative_to[r] >= 0 ||
        cfg.period_a[r] != cfg.period_a[j] || cfg.period_b[r] != cfg.period_b[j])
      throw fail("preprocessing.kinds[" + std::to_string(j) + "].relative_to = " + std::to_string(r) +
                 " must name another periodic feature with the same period that is not itself relative");
  }
}

// One flow's configuration (the 'flow' object, or one member of an ensemble's): `ctx` names it in errors.
void parse_flow(const Value& flow, const std::string& ctx, Config& cfg, const Fail& fail) {
  Doc f{flow, ctx, fail};
  cfg.family = f.string("family");
  std::set<std::string> keys = {"family", "features", "context", "bijectors", "hidden", "activation",
                                "permutation", "seed", "dropout", "batch_norm", "actnorm"};
  if (cfg.family == "maf" || cfg.family == "realnvp") {
    keys.insert("log_scale_clamp");
  } else if (cfg.family == "crqs" || cfg.family == "arqs") {
    for (const char* k : {"knots", "range", "min_bin_width", "min_bin_height", "min_derivative"}) keys.insert(k);
  } else {
    throw fail(ctx + "family " + quoted(cfg.family) + " is not supported (maf, realnvp, crqs, arqs" +
               (ctx == "flow." ? ", ensemble)" : "; an ensemble's members are single flows)"));
  }
  f.only_keys(keys, ctx == "flow." ? std::string("the flow configuration") : "the configuration " + ctx);
  cfg.autoregressive = cfg.family == "maf" || cfg.family == "arqs";
  cfg.D = static_cast<int>(f.integer("features", 1, kMaxFeatures));
  cfg.C = static_cast<int>(f.integer("context", 0, kMaxFeatures));
  cfg.bijectors = static_cast<int>(f.integer("bijectors", 1, kMaxBijectors));
  const Value& hid = f.get("hidden");
  if (!hid.is_array() || hid.as_array().empty() || static_cast<std::int64_t>(hid.as_array().size()) > kMaxHiddenLayers)
    throw fail(ctx + "hidden must be a list of 1 to " + std::to_string(kMaxHiddenLayers) + " layer widths");
  for (const Value& h : hid.as_array()) {
    if (!h.is_number() || !h.is_integer() || h.as_int64() < 1 || h.as_int64() > kMaxWidth)
      throw fail(ctx + "hidden holds " + Doc::describe(h) + "; widths must be integers in [1, " +
                 std::to_string(kMaxWidth) + "]");
    cfg.hidden.push_back(static_cast<int>(h.as_int64()));
  }
  cfg.act = parse_activation(f.string("activation"), fail);
  cfg.permutation = f.string("permutation");
  if (cfg.permutation != "reverse" && cfg.permutation != "random" && cfg.permutation != "none")
    throw fail(ctx + "permutation " + quoted(cfg.permutation) + " is not one of reverse, random, none");
  f.integer("seed", 0, std::numeric_limits<std::int64_t>::max());
  cfg.dropout = f.number("dropout");
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) throw fail(ctx + "dropout must be in [0, 1), got " + num(cfg.dropout));
  cfg.batch_norm = f.boolean("batch_norm");
  cfg.actnorm = f.boolean("actnorm");
  if (cfg.family == "maf" || cfg.family == "realnvp") {
    cfg.log_scale_clamp = f.number("log_scale_clamp");
    if (!(cfg.log_scale_clamp > 0)) throw fail(ctx + "log_scale_clamp must be > 0, got " + num(cfg.log_scale_clamp));
  } else {
    cfg.knots = static_cast<int>(f.integer("knots", 2, kMaxKnots));
    cfg.rqs.bound = f.number("range");
    cfg.rqs.min_bin_width = f.number("min_bin_width");
    cfg.rqs.min_bin_height = f.number("min_bin_height");
    cfg.rqs.min_derivative = f.number("min_derivative");
    try {
      validate_rqs(cfg.knots, cfg.rqs);
    } catch (const std::invalid_argument& e) {
      throw fail("invalid spline options in '" + ctx.substr(0, ctx.size() - 1) + "': " + e.what());
    }
    if (!(cfg.rqs.min_derivative < 1))
      throw fail(ctx + "min_derivative must be < 1, got " + num(cfg.rqs.min_derivative));
  }
}

// Members of one ensemble share every option but the seed (what nfhep train --ensemble writes; the engine
// sizes one workspace for all of them).
bool same_flow(const Config& a, const Config& b) {
  return a.family == b.family && a.D == b.D && a.C == b.C && a.bijectors == b.bijectors && a.hidden == b.hidden &&
         a.act == b.act && a.permutation == b.permutation && a.dropout == b.dropout && a.batch_norm == b.batch_norm &&
         a.actnorm == b.actnorm && a.log_scale_clamp == b.log_scale_clamp && a.knots == b.knots &&
         a.rqs.bound == b.rqs.bound && a.rqs.min_bin_width == b.rqs.min_bin_width &&
         a.rqs.min_bin_height == b.rqs.min_bin_height && a.rqs.min_derivative == b.rqs.min_derivative;
}

Config parse_config(const Value& doc, int version, const Fail& fail) {
  Config cfg;
  Doc top{doc, "", fail};
  const Value& flow = top.get("flow");
  if (!flow.is_object()) throw fail("'flow' must be an object");
  const Value* fam = flow.find("family");
  const bool ensemble = fam && fam->is_string() && fam->as_string() == "ensemble";
  if (ensemble != (version == 3))
    throw fail(ensemble ? "an ensemble of flows needs model-file version 3, this file is version " + std::to_string(version)
                        : std::string("a version 3 file holds an ensemble of flows, this one's flow.family is ") +
                              (fam ? Doc::describe(*fam) : std::string("(missing)")));
  if (ensemble) {
    Doc f{flow, "flow.", fail};
    f.only_keys({"family", "features", "context", "members"}, "the ensemble configuration");
    const Value& mem = f.get("members");
    if (!mem.is_array() || mem.as_array().size() < 2 || mem.as_array().size() > static_cast<std::size_t>(kMaxMembers))
      throw fail("flow.members must be a list of 2 to " + std::to_string(kMaxMembers) + " flow configurations");
    for (std::size_t k = 0; k < mem.as_array().size(); ++k) {
      const Value& mk = mem.as_array()[k];
      const std::string ctx = "flow.members[" + std::to_string(k) + "].";
      if (!mk.is_object()) throw fail(ctx.substr(0, ctx.size() - 1) + " must be an object");
      Config c;
      parse_flow(mk, ctx, c, fail);
      if (k > 0 && !same_flow(c, cfg.members[0]))
        throw fail(ctx.substr(0, ctx.size() - 1) + " differs from flow.members[0] in an option other than 'seed' "
                   "(an ensemble's members share one configuration)");
      cfg.members.push_back(std::move(c));
    }
    const Config& m0 = cfg.members[0];
    cfg.D = static_cast<int>(f.integer("features", 1, kMaxFeatures));
    cfg.C = static_cast<int>(f.integer("context", 0, kMaxFeatures));
    if (cfg.D != m0.D || cfg.C != m0.C)
      throw fail("flow.features/context (" + std::to_string(cfg.D) + ", " + std::to_string(cfg.C) +
                 ") differ from the members' (" + std::to_string(m0.D) + ", " + std::to_string(m0.C) + ")");
    cfg.family = "ensemble";
  } else {
    parse_flow(flow, "flow.", cfg, fail);
  }
  // preprocessing
  const Value& pre = top.get("preprocessing");
  if (!pre.is_object()) throw fail("'preprocessing' must be an object");
  Doc p{pre, "preprocessing.", fail};
  if (version >= 2)
    p.only_keys({"standardize", "log", "bounds", "features", "context", "fitted", "mean", "std", "context_mean",
                 "context_std", "kinds", "data_range", "quantile"},
                "the preprocessing");
  else
    p.only_keys({"standardize", "log", "bounds", "features", "context", "fitted", "mean", "std", "context_mean",
                 "context_std"},
                "the preprocessing (version 1)");
  cfg.standardize = p.boolean("standardize");
  p.boolean("fitted");
  if (p.integer("features", 1, kMaxFeatures) != cfg.D)
    throw fail("preprocessing.features differs from flow.features = " + std::to_string(cfg.D));
  if (p.integer("context", 0, kMaxFeatures) != cfg.C)
    throw fail("preprocessing.context differs from flow.context = " + std::to_string(cfg.C));
  const Value& lg = p.get("log");
  if (!lg.is_array()) throw fail("preprocessing.log must be a list of feature indices");
  std::vector<char> is_log(cfg.D, 0);
  for (const Value& i : lg.as_array()) {
    if (!i.is_number() || !i.is_integer() || i.as_int64() < 0 || i.as_int64() >= cfg.D)
      throw fail("preprocessing.log holds " + Doc::describe(i) + ", not a feature index in [0, " +
                 std::to_string(cfg.D) + ")");
    if (is_log[i.as_int64()]) throw fail("preprocessing.log lists feature " + std::to_string(i.as_int64()) + " twice");
    is_log[i.as_int64()] = 1;
    cfg.log.push_back(static_cast<int>(i.as_int64()));
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  cfg.lo.assign(cfg.D, nan);
  cfg.hi.assign(cfg.D, nan);
  const Value& bd = p.get("bounds");
  if (!bd.is_null()) {
    if (!bd.is_array() || static_cast<int>(bd.as_array().size()) != cfg.D)
      throw fail("preprocessing.bounds must be null or a list of " + std::to_string(cfg.D) + " [low, high] pairs");
    for (int j = 0; j < cfg.D; ++j) {
      const Value& b = bd.as_array()[j];
      if (b.is_null()) continue;
      if (!b.is_array() || b.as_array().size() != 2)
        throw fail("preprocessing.bounds[" + std::to_string(j) + "] must be [low, high] (null for an open side)");
      for (int side = 0; side < 2; ++side) {
        const Value& v = b.as_array()[side];
        if (v.is_null()) continue;
        if (!v.is_number() || !std::isfinite(v.as_double()))
          throw fail("preprocessing.bounds[" + std::to_string(j) + "] holds " + Doc::describe(v) +
                     ", not a finite number or null");
        (side == 0 ? cfg.lo : cfg.hi)[j] = v.as_double();
      }
      if (!std::isnan(cfg.lo[j]) && !std::isnan(cfg.hi[j]) && !(cfg.lo[j] < cfg.hi[j]))
        throw fail("preprocessing.bounds[" + std::to_string(j) + "] needs low < high, got [" + num(cfg.lo[j]) + ", " +
                   num(cfg.hi[j]) + "]");
      if (is_log[j] && (!std::isnan(cfg.lo[j]) || !std::isnan(cfg.hi[j])))
        throw fail("feature " + std::to_string(j) + " is both log-transformed and bounded (preprocessing.log and "
                   "preprocessing.bounds)");
    }
  }
  parse_kinds(pre, cfg, is_log, fail);
  return cfg;
}

// -- tensors ---------------------------------------------------------------------------------------------------
struct Tensors {
  Container& c;
  const Fail& fail;
  bool f32;
  std::string where;

  TensorInfo& find(const std::string& name, const std::string& code, const std::vector<std::uint64_t>& shape) {
    auto it = c.tensors.find(name);
    if (it == c.tensors.end())
      throw fail("tensor " + quoted(name) + " is missing (the configuration implies it)");
    TensorInfo& t = it->second;
    if (t.dtype != code)
      throw fail("tensor " + quoted(name) + " has dtype " + t.dtype + ", the configuration needs " + code);
    if (t.shape != shape)
      throw fail("tensor " + quoted(name) + " has shape " + shape_str(t.shape) + ", the configuration needs " +
                 shape_str(shape));
    t.used = true;
    return t;
  }
  // A floating tensor of the model's dtype, as doubles (exact), checked finite.
  std::vector<double> floats(const std::string& name, const std::vector<std::uint64_t>& shape) {
    TensorInfo& t = find(name, f32 ? "F32" : "F64", shape);
    std::vector<double> out(static_cast<std::size_t>(t.elements));
    const unsigned char* p = c.data + t.begin;
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (f32) {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        out[i] = v;
      } else {
        std::memcpy(&out[i], p + 8 * i, 8);
      }
      if (!std::isfinite(out[i])) throw fail("tensor " + quoted(name) + " holds NaN or infinite values");
    }
    return out;
  }
  std::vector<std::int64_t> ints(const std::string& name, const std::vector<std::uint64_t>& shape) {
    TensorInfo& t = find(name, "I64", shape);
    std::vector<std::int64_t> out(static_cast<std::size_t>(t.elements));
    if (!out.empty()) std::memcpy(out.data(), c.data + t.begin, 8 * out.size());
    return out;
  }
};

std::vector<std::uint64_t> shp(std::initializer_list<std::uint64_t> s) { return s; }

// MADE degrees as in nfhep.flows.nets.made_degrees.
std::vector<int> hidden_degrees(int width, int D, int C) {
  std::vector<int> d(width);
  for (int k = 0; k < width; ++k) d[k] = C > 0 ? k % D : (D > 1 ? k % (D - 1) + 1 : 0);
  return d;
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Output blocks of a layer whose output o reads the input prefix need[o] (non-decreasing): groups of about
// `out / 8` units (at least 16), each reading the prefix of its last unit.
std::vector<Dense<double>::Block> make_blocks(const std::vector<int>& need) {
  const int out = static_cast<int>(need.size());
  std::vector<Dense<double>::Block> b;
  const int g = std::max(16, (out + 7) / 8);  // 4, 8, 16 groups measured: 8 as fast as any
  for (int o = 0; o < out; o += g) {
    const int e = std::min(out, o + g);
    b.push_back({o, e, need[e - 1]});
  }
  return b;
}

template <class T>
void to_dense(Dense<T>& L, int in, int out, std::vector<double> W, std::vector<double> b,
              const std::vector<Dense<double>::Block>& blocks) {
  L.in = in;
  L.out = out;
  L.W = cast<T>(W);
  L.b = cast<T>(b);
  for (const auto& x : blocks) L.blocks.push_back({x.o_begin, x.o_end, x.k_end});
}

// One conditioner network: `in` inputs (Python order), hidden widths, `out` outputs. MADE if `made`.
template <class T>
Net<T> read_net(Tensors& ts, const Config& cfg, const std::string& prefix, int in, int out, bool made) {
  Net<T> net;
  net.act = cfg.act;
  if (!made && in == 0) {
    net.constant = true;
    net.const_out = cast<T>(ts.floats(prefix + "const", shp({static_cast<std::uint64_t>(out)})));
    return net;
  }
  const int D = cfg.D, C = cfg.C;
  const int P = made ? out / D : 0;
  // Python-order degrees of the inputs, and the engine's input order (MADE: [context, x])
  std::vector<int> prev_deg, prev_order;
  if (made) {
    for (int d = 1; d <= D; ++d) prev_deg.push_back(d);
    for (int c = 0; c < C; ++c) prev_deg.push_back(0);
    for (int c = 0; c < C; ++c) prev_order.push_back(D + c);
    for (int d = 0; d < D; ++d) prev_order.push_back(d);
  } else {
    for (int k = 0; k < in; ++k) prev_order.push_back(k);
  }
  std::vector<int> prev_sorted_deg;  // degrees in engine order
  for (int k : prev_order) prev_sorted_deg.push_back(made ? prev_deg[k] : 0);
  int j = 0;
  int width = in;
  std::vector<int> prev_deg_begin;  // for hidden layers after the first
  const std::size_t nh = cfg.hidden.size();
  for (std::size_t l = 0; l <= nh; ++l) {
    const bool last = l == nh;
    const int h = last ? out : cfg.hidden[l];
    const std::string lin = prefix + "net." + std::to_string(j) + ".";
    const auto W0 = ts.floats(lin + "weight", shp({static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(width)}));
    auto b0 = ts.floats(lin + "bias", shp({static_cast<std::uint64_t>(h)}));
    std::vector<double> W = W0;
    std::vector<int> deg;  // Python-order degrees of this layer's outputs
    if (made) {
      deg = last ? std::vector<int>() : hidden_degrees(h, D, C);
      if (last)
        for (int o = 0; o < h; ++o) deg.push_back(o / P + 1);
      const auto M = ts.floats(lin + "mask", shp({static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(width)}));
      for (int o = 0; o < h; ++o)
        for (int k = 0; k < width; ++k) {
          const bool on = last ? deg[o] > prev_deg[k] : deg[o] >= prev_deg[k];
          const double m = M[static_cast<std::size_t>(o) * width + k];
          if (m != (on ? 1.0 : 0.0))
            throw ts.fail("tensor " + quoted(lin + "mask") + " differs from the MADE degree rule at [" +
                          std::to_string(o) + ", " + std::to_string(k) + "] (docs/model-format.md §3.2)");
          W[static_cast<std::size_t>(o) * width + k] *= m;
        }
    }
    ++j;
    if (!last) {
      if (cfg.batch_norm) {
        const std::string bn = prefix + "net." + std::to_string(j) + ".";
        const auto g = ts.floats(bn + "weight", shp({static_cast<std::uint64_t>(h)}));
        const auto be = ts.floats(bn + "bias", shp({static_cast<std::uint64_t>(h)}));
        const auto rm = ts.floats(bn + "running_mean", shp({static_cast<std::uint64_t>(h)}));
        const auto rv = ts.floats(bn + "running_var", shp({static_cast<std::uint64_t>(h)}));
        ts.ints(bn + "num_batches_tracked", shp({}));
        for (int o = 0; o < h; ++o) {
          if (!(rv[o] >= 0)) throw ts.fail("tensor " + quoted(bn + "running_var") + " holds a negative variance");
          const double a = g[o] / std::sqrt(rv[o] + 1e-5);
          for (int k = 0; k < width; ++k) W[static_cast<std::size_t>(o) * width + k] *= a;
          b0[o] = (b0[o] - rm[o]) * a + be[o];
        }
        ++j;
      }
      ++j;                        // the activation
      if (cfg.dropout > 0) ++j;   // dropout (identity at evaluation)
    }
    // reorder: outputs by degree (stable), inputs as the previous layer's order
    std::vector<int> order(h);
    for (int o = 0; o < h; ++o) order[o] = o;
    if (made) std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return deg[a] < deg[b]; });
    std::vector<double> Wr(static_cast<std::size_t>(h) * width), br(h);
    for (int o = 0; o < h; ++o) {
      br[o] = b0[order[o]];
      for (int k = 0; k < width; ++k)
        Wr[static_cast<std::size_t>(o) * width + k] = W[static_cast<std::size_t>(order[o]) * width + prev_order[k]];
    }
    Dense<T> L;
    if (made) {
      // deg_begin over the sorted degrees; the input prefix each degree reads
      std::vector<int> sdeg(h);
      for (int o = 0; o < h; ++o) sdeg[o] = deg[order[o]];
      std::vector<int> db(D + 2, h);  // db[m]: first unit of degree >= m
      for (int m = 0; m <= D + 1; ++m)
        db[m] = static_cast<int>(std::lower_bound(sdeg.begin(), sdeg.end(), m) - sdeg.begin());
      // prefix read by a unit of (sorted) degree m: inputs of degree <= m (hidden) / < m (output); the
      // inputs are sorted by degree, so that is the count of such inputs
      auto prefix_of = [&](int m) {
        const auto e = last ? std::lower_bound(prev_sorted_deg.begin(), prev_sorted_deg.end(), m)
                            : std::upper_bound(prev_sorted_deg.begin(), prev_sorted_deg.end(), m);
        return static_cast<int>(e - prev_sorted_deg.begin());
      };
      std::vector<int> need(h);
      for (int o = 0; o < h; ++o) need[o] = prefix_of(sdeg[o]);
      // The blocks below skip the inputs past need[o]: they are masked out (checked above against the
      // degree rule, and zeroed by the mask), so skipping them changes nothing.
      to_dense(L, width, h, Wr, br, make_blocks(need));
      std::vector<int> step_prefix;
      if (last) {
        for (int i = 0; i < D; ++i) step_prefix.push_back(prefix_of(i + 1));
      } else {
        for (int m = 0; m < D; ++m) step_prefix.push_back(prefix_of(m));
      }
      std::vector<int> begins(db.begin(), db.begin() + (D + 1));
      if (last) {
        // output units of feature i: [i P, (i+1) P)
        begins.clear();
        for (int i = 0; i <= D; ++i) begins.push_back(i * P);
      }
      net.deg_begin.push_back(begins);
      net.prefix.push_back(step_prefix);
      prev_deg_begin = begins;
      prev_sorted_deg = sdeg;
      prev_deg = deg;
      prev_order = order;
    } else {
      to_dense(L, width, h, Wr, br, {{0, h, width}});
      prev_order.assign(h, 0);
      for (int o = 0; o < h; ++o) prev_order[o] = o;
      prev_sorted_deg.assign(h, 0);
    }
    net.layers.push_back(std::move(L));
    width = h;
  }
  return net;
}

template <class T>
void build_layers(Model<T>& m, Tensors& ts, const Config& cfg, const std::string& prefix) {
  m.D = cfg.D;
  m.C = cfg.C;
  m.split = cfg.D / 2;
  const bool rqs = cfg.family == "crqs" || cfg.family == "arqs";
  m.transformer = rqs ? Transformer::rqs : Transformer::affine;
  m.P = rqs ? 3 * cfg.knots - 1 : 2;
  m.K = cfg.knots;
  m.rqs = cfg.rqs;
  m.log_scale_clamp = static_cast<T>(cfg.log_scale_clamp);
  const std::uint64_t D = static_cast<std::uint64_t>(cfg.D), C = static_cast<std::uint64_t>(cfg.C);
  for (int h : cfg.hidden) m.max_width = std::max(m.max_width, h);
  const std::uint64_t out_made = D * static_cast<std::uint64_t>(m.P);
  const std::uint64_t out_cpl = (D - static_cast<std::uint64_t>(m.split)) * static_cast<std::uint64_t>(m.P);
  if (out_made > kMaxElements / static_cast<std::uint64_t>(m.max_width))
    throw ts.fail("the conditioner's output layer (" + std::to_string(out_made) + " x " + std::to_string(m.max_width) +
                  ") is absurdly large");
  m.max_params = static_cast<int>(cfg.autoregressive ? out_made : out_cpl);
  int idx = 0;
  for (int i = 0; i < cfg.bijectors; ++i) {
    if (i > 0 && cfg.permutation != "none") {
      const std::string pre = prefix + std::to_string(idx++) + ".";
      const auto perm = ts.ints(pre + "perm", shp({D}));
      const auto inv = ts.ints(pre + "inverse_perm", shp({D}));
      Layer<T> L;
      L.kind = LayerKind::permutation;
      std::vector<char> seen(D, 0);
      for (std::uint64_t k = 0; k < D; ++k) {
        if (perm[k] < 0 || static_cast<std::uint64_t>(perm[k]) >= D || seen[perm[k]])
          throw ts.fail("tensor " + quoted(pre + "perm") + " is not a permutation of 0.." + std::to_string(D - 1));
        seen[perm[k]] = 1;
        L.perm.push_back(static_cast<int>(perm[k]));
      }
      L.inverse_perm.assign(D, 0);
      for (std::uint64_t k = 0; k < D; ++k) L.inverse_perm[L.perm[k]] = static_cast<int>(k);
      for (std::uint64_t k = 0; k < D; ++k)
        if (inv[k] != L.inverse_perm[k])
          throw ts.fail("tensor " + quoted(pre + "inverse_perm") + " is not the inverse of " + quoted(pre + "perm"));
      if (cfg.permutation == "reverse")
        for (std::uint64_t k = 0; k < D; ++k)
          if (L.perm[k] != static_cast<int>(D - 1 - k))
            throw ts.fail("tensor " + quoted(pre + "perm") + " is not the reverse permutation that flow.permutation = "
                          "'reverse' implies");
      m.layers.push_back(std::move(L));
    }
    if (cfg.actnorm) {
      const std::string pre = prefix + std::to_string(idx++) + ".";
      Layer<T> L;
      L.kind = LayerKind::actnorm;
      L.log_scale = cast<T>(ts.floats(pre + "log_scale", shp({D})));
      L.shift = cast<T>(ts.floats(pre + "shift", shp({D})));
      ts.floats(pre + "initialized", shp({}));
      T s = T(0);
      for (T v : L.log_scale) s += v;
      L.sum_log_scale = s;
      m.layers.push_back(std::move(L));
    }
    const std::string pre = prefix + std::to_string(idx++) + ".conditioner.";
    Layer<T> L;
    if (cfg.autoregressive) {
      L.kind = LayerKind::autoregressive;
      L.net = read_net<T>(ts, cfg, pre, static_cast<int>(D + C), static_cast<int>(out_made), true);
    } else {
      L.kind = LayerKind::coupling;
      L.net = read_net<T>(ts, cfg, pre, m.split + cfg.C, static_cast<int>(out_cpl), false);
    }
    m.layers.push_back(std::move(L));
  }
}

// The flow's layers (one flow: under "flow.layers."; an ensemble: member k's under
// "flow.members.k.layers.", in m.members[k]) and the preprocessing (in m).
template <class T>
void build_model(Model<T>& m, Tensors& ts, const Config& cfg) {
  if (cfg.members.empty()) {
    build_layers(m, ts, cfg, "flow.layers.");
  } else {
    m.D = cfg.D;
    m.C = cfg.C;
    m.members.resize(cfg.members.size());
    for (std::size_t k = 0; k < cfg.members.size(); ++k)
      build_layers(m.members[k], ts, cfg.members[k], "flow.members." + std::to_string(k) + ".layers.");
  }
  const std::uint64_t D = static_cast<std::uint64_t>(cfg.D), C = static_cast<std::uint64_t>(cfg.C);
  // preprocessing
  const auto mean = ts.floats("preprocessing.mean", shp({D}));
  const auto sd = ts.floats("preprocessing.std", shp({D}));
  const auto cm = ts.floats("preprocessing.context_mean", shp({C}));
  const auto cs = ts.floats("preprocessing.context_std", shp({C}));
  ts.floats("preprocessing.fitted", shp({}));
  for (std::uint64_t j = 0; j < D; ++j)
    if (!(sd[j] > 0)) throw ts.fail("tensor 'preprocessing.std' holds " + num(sd[j]) + " at " + std::to_string(j) + ": must be > 0");
  for (std::uint64_t j = 0; j < C; ++j)
    if (!(cs[j] > 0))
      throw ts.fail("tensor 'preprocessing.context_std' holds " + num(cs[j]) + " at " + std::to_string(j) + ": must be > 0");
  m.mean = cast<T>(mean);
  m.std_ = cast<T>(sd);
  m.cmean = cast<T>(cm);
  m.cstd = cast<T>(cs);
  T sls = T(0);
  for (T v : m.std_) sls += std::log(v);
  m.sum_log_std = sls;
  m.pre_kind.assign(D, PreKind::identity);
  m.lo = cfg.lo;
  m.hi = cfg.hi;
  m.lo_t.assign(D, T(0));
  m.hi_t.assign(D, T(0));
  m.log_width.assign(D, T(0));
  for (int j : cfg.log) m.pre_kind[j] = PreKind::log;
  for (std::uint64_t j = 0; j < D; ++j) {
    const bool l = !std::isnan(cfg.lo[j]), h = !std::isnan(cfg.hi[j]);
    if (l) m.lo_t[j] = static_cast<T>(cfg.lo[j]);
    if (h) m.hi_t[j] = static_cast<T>(cfg.hi[j]);
    if (l && h) {
      m.pre_kind[j] = PreKind::two_sided;
      m.log_width[j] = static_cast<T>(std::log(cfg.hi[j] - cfg.lo[j]));
    } else if (l) {
      m.pre_kind[j] = PreKind::lower;
    } else if (h) {
      m.pre_kind[j] = PreKind::upper;
    }
  }
  m.special = cfg.special.empty() ? std::vector<Special>(D, Special::none) : cfg.special;
  m.period_a.assign(D, T(0));
  m.period_b.assign(D, T(0));
  m.shift.assign(D, T(0));
  m.relative_to = cfg.relative_to.empty() ? std::vector<int>(D, -1) : cfg.relative_to;
  m.any_relative = false;
  for (int r : m.relative_to) m.any_relative = m.any_relative || r >= 0;
  m.values.assign(D, {});
  m.spike.assign(D, T(0));
  m.cell0.assign(D, T(0));
  m.cell1.assign(D, T(0));
  m.spike_split.assign(D, T(0));
  m.log_cell.assign(D, 0.0);
  m.dequantized = false;
  m.q_v.assign(D, {});
  m.q_u.assign(D, {});
  m.q_s.assign(D, {});
  for (std::uint64_t j = 0; j < D && !cfg.q_v.empty(); ++j) {
    if (cfg.q_v[j].empty()) continue;
    m.q_v[j] = cast<T>(cfg.q_v[j]);
    m.q_u[j] = cast<T>(cfg.q_u[j]);
    const std::size_t K = m.q_v[j].size();
    for (std::size_t i = 0; i + 1 < K; ++i) {
      const T s = (m.q_u[j][i + 1] - m.q_u[j][i]) / (m.q_v[j][i + 1] - m.q_v[j][i]);
      if (!(s > T(0)) || !std::isfinite(s))
        throw ts.fail("preprocessing.quantile[" + std::to_string(j) +
                      "]: knots not strictly increasing in the model's precision");
      m.q_s[j].push_back(s);
    }
  }
  for (std::uint64_t j = 0; j < D; ++j) {
    switch (m.special[j]) {
      case Special::none:
        break;
      case Special::periodic:
        m.period_a[j] = static_cast<T>(cfg.period_a[j]);
        m.period_b[j] = static_cast<T>(cfg.period_b[j]);
        m.shift[j] = static_cast<T>(cfg.shift[j]);
        break;
      case Special::discrete:
        m.values[j] = cast<T>(cfg.values[j]);
        m.dequantized = true;
        break;
      case Special::spike:
        m.spike[j] = static_cast<T>(cfg.spike[j]);
        m.cell0[j] = static_cast<T>(cfg.cell0[j]);
        m.cell1[j] = static_cast<T>(cfg.cell1[j]);
        m.spike_split[j] = static_cast<T>(cfg.split[j]);
        m.log_cell[j] = std::log(cfg.cell1[j] - cfg.cell0[j]);
        m.dequantized = true;
        break;
    }
  }
}

// The JSON copies of the preprocessing constants must equal the (authoritative) tensors.
void check_constants(const Value& pre, const char* key, const std::vector<double>& t, bool f32, const Fail& fail) {
  const Value* v = pre.find(key);
  if (!v) throw fail("the 'nfhep' metadata lacks the required key 'preprocessing." + std::string(key) + "'");
  if (!v->is_array() || v->as_array().size() != t.size())
    throw fail("preprocessing." + std::string(key) + " must be a list of " + std::to_string(t.size()) + " numbers");
  for (std::size_t i = 0; i < t.size(); ++i) {
    const Value& x = v->as_array()[i];
    if (!x.is_number()) throw fail("preprocessing." + std::string(key) + " holds " + Doc::describe(x));
    const double d = f32 ? static_cast<double>(static_cast<float>(x.as_double())) : x.as_double();
    if (d != t[i])
      throw fail("preprocessing." + std::string(key) + "[" + std::to_string(i) + "] = " + num(x.as_double()) +
                 " differs from the tensor 'preprocessing." + key + "' (" + num(t[i]) + "): inconsistent file");
  }
}

std::vector<double> tensor_values(Container& c, const std::string& name, bool f32) {
  const TensorInfo& t = c.tensors.at(name);
  std::vector<double> out(static_cast<std::size_t>(t.elements));
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (f32) {
      float v;
      std::memcpy(&v, c.data + t.begin + 4 * i, 4);
      out[i] = v;
    } else {
      std::memcpy(&out[i], c.data + t.begin + 8 * i, 8);
    }
  }
  return out;
}

std::vector<std::string> names(const Value& v, const char* key, const Fail& fail) {
  if (!v.is_array()) throw fail(std::string("'") + key + "' must be a list of names");
  std::vector<std::string> out;
  for (const Value& s : v.as_array()) {
    if (!s.is_string()) throw fail(std::string("'") + key + "' holds " + Doc::describe(s) + ", not a name");
    out.push_back(s.as_string());
  }
  return out;
}

}  // namespace

std::shared_ptr<FlowImpl> load_flow(const unsigned char* bytes, std::size_t size, const std::string& where) {
  const Fail fail{where};
  Container c = parse_container(bytes, size, fail);
  auto it = c.metadata.find("nfhep");
  if (it == c.metadata.end()) throw fail("no 'nfhep' metadata: a safetensors file, but not an nfhep model file");
  Value doc;
  try {
    doc = json::parse(it->second);
  } catch (const json::ParseError& e) {
    throw fail(std::string("the 'nfhep' metadata is not valid JSON (") + e.what() + ")");
  }
  if (!doc.is_object()) throw fail("the 'nfhep' metadata is not a JSON object");
  Doc top{doc, "", fail};
  top.only_keys({"format", "version", "flow", "preprocessing", "features", "context", "dtype", "checksum",
                 "permutations", "provenance"},
                "the 'nfhep' metadata");
  const Value* fmt = doc.find("format");
  if (!fmt || !fmt->is_string() || fmt->as_string() != "nfhep-flow")
    throw fail("format " + (fmt ? Doc::describe(*fmt) : std::string("(missing)")) + " is not 'nfhep-flow'");
  const Value* ver = doc.find("version");
  if (!ver || !ver->is_number() || !ver->is_integer() || ver->as_int64() < 1 || ver->as_int64() > kReadableVersion) {
    std::string msg = "model-file version " + (ver ? Doc::describe(*ver) : std::string("(missing)")) +
                      " is not supported by this nfhep engine, which reads versions 1 to " + std::to_string(kReadableVersion);
    if (ver && ver->is_integer() && ver->as_int64() > kReadableVersion) msg += "; upgrade nfhep to read it";
    throw fail(msg);
  }
  const std::string& dtype = top.string("dtype");
  if (dtype != "float32" && dtype != "float64") throw fail("dtype " + quoted(dtype) + " is not float32 or float64");
  const bool f32 = dtype == "float32";
  // checksum
  const Value& ck = top.get("checksum");
  if (!ck.is_object() || !ck.find("algorithm") || !ck.find("algorithm")->is_string() ||
      ck.find("algorithm")->as_string() != "sha256" || !ck.find("value") || !ck.find("value")->is_string())
    throw fail("checksum entry is not a sha256 checksum");
  const std::string sum = checksum_of(c);
  if (sum != ck.find("value")->as_string()) throw fail("checksum mismatch: the tensor data is corrupted");
  // configuration
  const Config cfg = parse_config(doc, static_cast<int>(doc.find("version")->as_int64()), fail);
  auto impl = std::make_shared<FlowImpl>();
  impl->path = where;
  impl->family = cfg.family;
  impl->checksum = sum;
  impl->metadata_json = it->second;
  impl->f32 = f32;
  impl->features = names(top.get("features"), "features", fail);
  if (doc.find("context")) impl->context_features = names(*doc.find("context"), "context", fail);
  if (static_cast<int>(impl->features.size()) != cfg.D)
    throw fail("'features' names " + std::to_string(impl->features.size()) + " features, the flow has " +
               std::to_string(cfg.D));
  if (static_cast<int>(impl->context_features.size()) != cfg.C)
    throw fail("'context' names " + std::to_string(impl->context_features.size()) + " context features, the flow has " +
               std::to_string(cfg.C));
  {
    std::set<std::string> seen;
    for (const auto& n : impl->features)
      if (!seen.insert(n).second) throw fail("feature name " + quoted(n) + " appears twice");
    for (const auto& n : impl->context_features)
      if (!seen.insert(n).second) throw fail("context name " + quoted(n) + " is not unique");
  }
  if (const Value* prov = doc.find("provenance"))
    if (!prov->is_object()) throw fail("'provenance' must be an object");
  // tensors
  Tensors ts{c, fail, f32, where};
  if (f32)
    build_model(impl->mf, ts, cfg);
  else
    build_model(impl->md, ts, cfg);
  std::vector<std::string> extra;
  for (const auto& kv : c.tensors)
    if (!kv.second.used) extra.push_back(kv.first);
  if (!extra.empty()) {
    std::string list;
    for (std::size_t i = 0; i < extra.size() && i < 10; ++i) list += (i ? ", " : "") + quoted(extra[i]);
    if (extra.size() > 10) list += ", ...";
    throw fail("tensors do not match the '" + cfg.family + "' model of the configuration: unexpected " + list);
  }
  // the metadata's copies of tensor values
  const Value& pre = top.get("preprocessing");
  check_constants(pre, "mean", tensor_values(c, "preprocessing.mean", f32), f32, fail);
  check_constants(pre, "std", tensor_values(c, "preprocessing.std", f32), f32, fail);
  check_constants(pre, "context_mean", tensor_values(c, "preprocessing.context_mean", f32), f32, fail);
  check_constants(pre, "context_std", tensor_values(c, "preprocessing.context_std", f32), f32, fail);
  if (const Value* perms = doc.find("permutations")) {
    if (!perms->is_object()) throw fail("'permutations' must be an object");
    std::map<std::string, const Value*> listed;
    for (const auto& kv : perms->as_object()) listed[kv.first] = &kv.second;
    std::size_t n_perm = 0;
    for (const auto& kv : c.tensors) {
      const std::string& n = kv.first;
      if (n.size() < 5 || n.compare(n.size() - 5, 5, ".perm") != 0) continue;
      ++n_perm;
      auto l = listed.find(n);
      if (l == listed.end() || !l->second->is_array() || l->second->as_array().size() != kv.second.elements)
        throw fail("the permutations in the metadata differ from the 'perm' tensors (" + quoted(n) + ")");
      std::vector<std::int64_t> v(static_cast<std::size_t>(kv.second.elements));
      if (!v.empty()) std::memcpy(v.data(), c.data + kv.second.begin, 8 * v.size());
      for (std::size_t k = 0; k < v.size(); ++k) {
        const Value& x = l->second->as_array()[k];
        if (!x.is_integer() || x.as_int64() != v[k])
          throw fail("the permutations in the metadata differ from the 'perm' tensors (" + quoted(n) + ")");
      }
    }
    if (n_perm != listed.size()) throw fail("the permutations in the metadata differ from the 'perm' tensors");
  }
  // support bounds (public)
  const double inf = std::numeric_limits<double>::infinity();
  impl->lower.assign(cfg.D, -inf);
  impl->upper.assign(cfg.D, inf);
  for (int j = 0; j < cfg.D; ++j) {
    if (!std::isnan(cfg.lo[j])) impl->lower[j] = cfg.lo[j];
    if (!std::isnan(cfg.hi[j])) impl->upper[j] = cfg.hi[j];
  }
  for (int j : cfg.log) impl->lower[j] = 0.0;
  return impl;
}

}  // namespace nfhep::detail
