// Additive attention on a CPU, for sampling: out(q) = sum_s softmax_s(w . relu(a_q + b_s)) v_s over the memory
// tokens of q's group, with an online softmax over tiles of tokens (spm_gen/models/native_attention.py builds
// and calls it; it has no backward).
//
// The score costs one max and one add per pair-channel. With s = sign(w), alpha = |w| a and beta = -|w| b, and
// since relu(x + y) = max(x, -y) + y exactly,
//     w . relu(a + b) = w . b + sum_h s_h max(alpha_h, beta_h).
// The caller gives the channels in an order that puts the npos channels with w > 0 first (w = 0 adds
// max(0, 0) = 0), and pads: queries to a multiple of query_block() rows, tokens to a multiple of token_block()
// (their w . b row set to -inf, like the readout's padding, so that they weigh exactly 0), values to a multiple
// of value_block() channels. Every score is the same sequence of operations wherever its pair falls, and the
// tiles always start at token 0, so a query's output depends only on its group's tokens. Plain C++ with GCC
// vector extensions (the compiler picks the machine's widest vectors: -march=native); OpenMP shares the units
// of work out.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int kLanes = 16;
constexpr int QB = 6;           // query rows per block
constexpr int NV = 2;           // vectors of memory tokens per score block
constexpr int64_t MB = kLanes * NV;
constexpr int64_t TM = 8 * MB;  // memory tokens per tile of the online softmax
constexpr int NH = 4;           // vectors of value channels per block of the weighted sum
constexpr int64_t RB = 8;       // query blocks per unit of work
constexpr float kInf = std::numeric_limits<float>::infinity();

typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t ivec __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof v); }

inline vec broadcast(float x) { return x - vec{}; }  // x - 0 is x exactly, so this folds to a broadcast

inline vec vmax(vec a, vec b) { return a > b ? a : b; }

inline float hmax(vec v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

inline float hsum(vec v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// exp(x) for x <= 0 (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial for e^r, 2^n from the
// exponent bits; about 1 ulp); 0 below -87 and for -inf.
inline vec vexp(vec x) {
  const vec lowest = broadcast(-87.f);
  const vec zero = vec{};
  const vec clamped = x > lowest ? x : lowest;
  const vec shifter = broadcast(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer
  const vec n = (clamped * 1.44269504088896341f + shifter) - shifter;
  vec r = clamped - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vec p = broadcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const ivec bits = (__builtin_convertvector(n, ivec) + 127) << 23;
  vec scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const vec y = p * scale;
  return x > lowest ? y : zero;
}

// acc[r][v] +/-= max(alpha of row r, beta of token vector v) over channels order[c0], ..., order[c1 - 1].
template <bool Add>
inline void accumulate(const float* q, const float* k, const int64_t* order, vec (&acc)[QB][NV], int64_t c0,
                       int64_t c1, int64_t H, int64_t M) {
  for (int64_t i = c0; i < c1; ++i) {
    const int64_t c = order[i];
    vec kv[NV];
    for (int v = 0; v < NV; ++v) kv[v] = load(k + c * M + kLanes * v);
    for (int r = 0; r < QB; ++r) {
      const vec a = broadcast(q[r * H + c]);
      for (int v = 0; v < NV; ++v) acc[r][v] = Add ? acc[r][v] + vmax(a, kv[v]) : acc[r][v] - vmax(a, kv[v]);
    }
  }
}

// Scores of one query block against the tile's tokens [t0, t0 + tm) into s (QB rows of TM).
void tile_scores(const float* q, const float* k, const int64_t* order, float* s, int64_t t0, int64_t tm,
                 int64_t H, int64_t M, int64_t npos) {
  for (int64_t j0 = 0; j0 < tm; j0 += MB) {
    vec acc[QB][NV];
    for (int v = 0; v < NV; ++v) {
      const vec c = load(k + H * M + t0 + j0 + kLanes * v);  // w . b
      for (int r = 0; r < QB; ++r) acc[r][v] = c;
    }
    accumulate<true>(q, k + t0 + j0, order, acc, 0, npos, H, M);
    accumulate<false>(q, k + t0 + j0, order, acc, npos, H, H, M);
    for (int r = 0; r < QB; ++r)
      for (int v = 0; v < NV; ++v) store(s + r * TM + j0 + kLanes * v, acc[r][v]);
  }
}

// acc[r] += sum_j p[r][j] values[j] over the tile's tokens, in blocks of NH vectors of channels.
void weighted_sum(const float* p, const float* values, float* acc, int64_t tm, int64_t HV) {
  for (int64_t h0 = 0; h0 < HV; h0 += NH * kLanes) {
    vec a[QB][NH];
    for (int r = 0; r < QB; ++r)
      for (int x = 0; x < NH; ++x) a[r][x] = load(acc + r * HV + h0 + kLanes * x);
    for (int64_t j = 0; j < tm; ++j) {
      vec v[NH];
      for (int x = 0; x < NH; ++x) v[x] = load(values + j * HV + h0 + kLanes * x);
      for (int r = 0; r < QB; ++r) {
        const vec pj = broadcast(p[r * TM + j]);
        for (int x = 0; x < NH; ++x) a[r][x] = a[r][x] + pj * v[x];
      }
    }
    for (int r = 0; r < QB; ++r)
      for (int x = 0; x < NH; ++x) store(acc + r * HV + h0 + kLanes * x, a[r][x]);
  }
}

}  // namespace

extern "C" int64_t query_block() { return QB; }
extern "C" int64_t token_block() { return MB; }
extern "C" int64_t value_block() { return NH * kLanes; }

// q: (G, Q, H) alpha; k: (G, H + 1, M) beta transposed, its last row w . b; values: (G, M, HV); out: (G, Q, HV);
// order: the H channels, those with w > 0 (npos of them) first; threads: torch.get_num_threads() of the caller.
// A unit of work is RB query blocks of one group; each tile of memory tokens (and of values) is read once per unit
// and stays in cache while its query blocks use it.
extern "C" void additive_attention(const float* q, const float* k, const float* values, float* out,
                                   const int64_t* order, int64_t G, int64_t Q, int64_t H, int64_t M, int64_t HV,
                                   int64_t npos, int64_t threads) {
  const int64_t blocks = Q / QB, ranges = (blocks + RB - 1) / RB;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> s(QB * TM), acc(RB * QB * HV), run_max(RB * QB), run_sum(RB * QB);
#pragma omp for schedule(static)
    for (int64_t unit = 0; unit < G * ranges; ++unit) {
      const int64_t g = unit / ranges, b0 = unit % ranges * RB, nb = std::min(RB, blocks - b0);
      const float* kg = k + g * (H + 1) * M;
      const float* vg = values + g * M * HV;
      std::fill(run_max.begin(), run_max.end(), -kInf);
      std::fill(run_sum.begin(), run_sum.end(), 0.f);
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t t0 = 0; t0 < M; t0 += TM) {
        const int64_t tm = std::min(TM, M - t0);
        for (int64_t b = 0; b < nb; ++b) {
          tile_scores(q + (g * Q + (b0 + b) * QB) * H, kg, order, s.data(), t0, tm, H, M, npos);
          float* block_acc = acc.data() + b * QB * HV;
          for (int r = 0; r < QB; ++r) {
            float* row = s.data() + r * TM;
            float& row_max = run_max[b * QB + r];
            vec mx = broadcast(-kInf);
            for (int64_t j = 0; j < tm; j += kLanes) mx = vmax(mx, load(row + j));
            const float tile_max = hmax(mx), new_max = tile_max > row_max ? tile_max : row_max;
            if (new_max == -kInf) {  // no real token yet: nothing to weigh
              std::fill(row, row + tm, 0.f);
              continue;
            }
            const float correction = std::exp(row_max - new_max);
            vec sum = vec{};
            for (int64_t j = 0; j < tm; j += kLanes) {
              const vec p = vexp(load(row + j) - new_max);
              store(row + j, p);
              sum += p;
            }
            run_sum[b * QB + r] = run_sum[b * QB + r] * correction + hsum(sum);
            row_max = new_max;
            float* row_acc = block_acc + r * HV;
            for (int64_t h = 0; h < HV; h += kLanes) store(row_acc + h, load(row_acc + h) * correction);
          }
          weighted_sum(s.data(), vg + t0 * HV, block_acc, tm, HV);
        }
      }
      for (int64_t b = 0; b < nb; ++b) {
        float* ob = out + (g * Q + (b0 + b) * QB) * HV;
        for (int r = 0; r < QB; ++r)
          for (int64_t h = 0; h < HV; ++h) ob[r * HV + h] = acc[(b * QB + r) * HV + h] / run_sum[b * QB + r];
      }
    }
  }
}
