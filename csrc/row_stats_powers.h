// Powers: b r^beta and the gradient weight b r^(beta - 2) of a squared distance, every pass's
// inner step (scalar, and eight lanes at a time under AVX2).
// Part of row_stats_kernel.h, included there inside the kernel namespace; no include guard: it
// is compiled once per CPU variant.

// r^beta from d = r^2 without exp or log for general beta in fp32, by tables built once per call
// (FloatPowerTables): with d = 2^(E - 127) m (E the biased exponent, m in [1, 2)) and c_k the
// centre of the eighth of [1, 2) that holds m (k the top three mantissa bits),
//   d^(beta/2) = 2^((beta/2)(E - 127)) c_k^(beta/2) (1 + rho)^(beta/2),   rho = m / c_k - 1,
// |rho| <= 1/17, (1 + rho)^(beta/2) by its Taylor polynomial of degree 4 (error below 2.2e-8
// for beta in (0, 2)), and 2^((beta/2)(E - 127)) as the product of three 8-entry tables on the
// fields of E = 64 h + 8 i + l. Every table entry is d's power rounded once from double, so a
// term is within about 4e-7 relative of the exact power over the whole float range (the
// roundings of four products and four entries; tested), and an AVX2 register holds each table
// (one permute per lookup, no gathers, a third of the floating-point work of log2 / exp2
// polynomials). The fp64 path uses std::exp / std::log.
struct FloatPowerTables {
  alignas(32) float inv_centre[8];    // 1 / c_k
  alignas(32) float centre_power[8];  // c_k^(beta/2)
  alignas(32) float exp_low[8];       // 2^((beta/2) l)
  alignas(32) float exp_mid[8];       // 2^((beta/2) 8 i)
  alignas(32) float exp_high[8];      // 2^((beta/2) (64 h - 127)), h < 4
  float taylor[4];                    // binom(beta/2, 1..4)
};

// beta / 2 and, for the general power in fp32, its tables.
template <typename T>
struct PowerParams {
  T half_beta;
  FloatPowerTables tables;

  explicit PowerParams(double beta) : half_beta(static_cast<T>(0.5 * beta)) {
    const double hb = 0.5 * beta;
    double coefficient = 1.0;
    for (int n = 0; n < 4; ++n) {
      coefficient *= (hb - n) / (n + 1);
      tables.taylor[n] = static_cast<float>(coefficient);
    }
    for (int k = 0; k < 8; ++k) {
      const double centre = 1.0 + (k + 0.5) / 8.0;
      tables.inv_centre[k] = static_cast<float>(1.0 / centre);
      tables.centre_power[k] = static_cast<float>(std::pow(centre, hb));
      tables.exp_low[k] = static_cast<float>(std::exp2(hb * k));
      tables.exp_mid[k] = static_cast<float>(std::exp2(hb * 8 * k));
      tables.exp_high[k] = static_cast<float>(std::exp2(hb * (64 * (k & 3) - 127)));
    }
  }
};

// d^(beta/2) for d a positive normal float (or +inf, which gives a finite value) by the tables.
inline float power_by_tables(float d, const FloatPowerTables& t) {
  int32_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  const int32_t k = (bits >> 20) & 7, e = bits >> 23;
  const int32_t mantissa_bits = (bits & 0x007fffff) | 0x3f800000;
  float m;
  std::memcpy(&m, &mantissa_bits, sizeof m);
  const float rho = m * t.inv_centre[k] - 1.0f;
  const float series =
      1.0f + rho * (t.taylor[0] + rho * (t.taylor[1] + rho * (t.taylor[2] + rho * t.taylor[3])));
  return (t.centre_power[k] * t.exp_low[e & 7]) * (t.exp_mid[(e >> 3) & 7] * t.exp_high[e >> 6]) *
         series;
}

// max(d2, the smallest normal number), for any d2 that is not NaN: for floats one integer max on
// the bits (negative numbers, zeros and subnormals all come out as FLT_MIN).
inline float at_least_min_normal(float d2) {
  int32_t bits;
  std::memcpy(&bits, &d2, sizeof bits);
  bits = std::max(bits, int32_t(0x00800000));
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}
inline double at_least_min_normal(double d2) { return std::max(d2, 2.2250738585072014e-308); }

// r^beta, r = sqrt(d), for d a positive normal number: the common exponents avoid exp and log.
template <Power P, typename T>
inline T power_of_square(T d, const PowerParams<T>& pw) {
  if constexpr (P == Power::kOne) {
    return std::sqrt(d);
  } else if constexpr (P == Power::kTwo) {
    return d;
  } else if constexpr (P == Power::kHalf) {
    return std::sqrt(std::sqrt(d));
  } else if constexpr (std::is_same_v<T, float>) {
    return power_by_tables(d, pw.tables);
  } else {
    return std::exp(pw.half_beta * std::log(d));
  }
}

// For a squared distance d2 (<= 0 where the pair is to be skipped: a duplicate or a dropped
// pair) and a weight b: b r^beta, and 0 where d2 <= 0. The passes without gradients need only
// this (no division).
template <Power P, typename T>
inline T weighted_power(T d2, T b, const PowerParams<T>& pw) {
  const T b_here = d2 > T(0) ? b : T(0);
  if constexpr (P == Power::kTwo) return b_here * d2;
  return b_here * power_of_square<P>(at_least_min_normal(d2), pw);
}

// bp = b r^beta and the gradient weight w = b r^(beta - 2) = bp / d2 (b itself for beta = 2),
// both 0 where d2 <= 0 (the subgradient 0 of a duplicate).
template <Power P, typename T>
inline void weighted_powers(T d2, T b, const PowerParams<T>& pw, T& bp, T& w) {
  const T b_here = d2 > T(0) ? b : T(0);
  if constexpr (P == Power::kTwo) {
    bp = b_here * d2;
    w = b_here;
  } else {
    const T d = at_least_min_normal(d2);
    bp = b_here * power_of_square<P>(d, pw);
    w = bp / d;
  }
}

#ifdef EF_KERNEL_AVX2
// The tables in registers (loaded once per row: stores to a float row could alias them).
struct FloatPowerRegisters {
  __m256 inv_centre, centre_power, exp_low, exp_mid, exp_high, taylor[4];
  explicit FloatPowerRegisters(const FloatPowerTables& t)
      : inv_centre(_mm256_load_ps(t.inv_centre)),
        centre_power(_mm256_load_ps(t.centre_power)),
        exp_low(_mm256_load_ps(t.exp_low)),
        exp_mid(_mm256_load_ps(t.exp_mid)),
        exp_high(_mm256_load_ps(t.exp_high)),
        taylor{_mm256_set1_ps(t.taylor[0]), _mm256_set1_ps(t.taylor[1]),
               _mm256_set1_ps(t.taylor[2]), _mm256_set1_ps(t.taylor[3])} {}
};

// power_by_tables on eight floats (the same operations, in the same order).
inline __m256 power_by_tables8(__m256i bits, const FloatPowerRegisters& t) {
  const __m256i k = _mm256_srli_epi32(bits, 20);  // permutes read the low three bits
  const __m256i e = _mm256_srli_epi32(bits, 23);
  const __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 rho = _mm256_fmsub_ps(m, _mm256_permutevar8x32_ps(t.inv_centre, k), one);
  __m256 series = _mm256_fmadd_ps(t.taylor[3], rho, t.taylor[2]);
  series = _mm256_fmadd_ps(series, rho, t.taylor[1]);
  series = _mm256_fmadd_ps(series, rho, t.taylor[0]);
  series = _mm256_fmadd_ps(series, rho, one);
  const __m256 low = _mm256_mul_ps(_mm256_permutevar8x32_ps(t.centre_power, k),
                                   _mm256_permutevar8x32_ps(t.exp_low, e));
  const __m256 high =
      _mm256_mul_ps(_mm256_permutevar8x32_ps(t.exp_mid, _mm256_srli_epi32(e, 3)),
                    _mm256_permutevar8x32_ps(t.exp_high, _mm256_srli_epi32(e, 6)));
  return _mm256_mul_ps(_mm256_mul_ps(low, high), series);
}

// b where d2 > 0, else 0, for eight pairs.
inline __m256 weights_where_positive8(__m256 d2, const float* b) {
  return _mm256_and_ps(_mm256_cmp_ps(d2, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_loadu_ps(b));
}
// the bits of max(d2, FLT_MIN) for eight pairs (as at_least_min_normal)
inline __m256i at_least_min_normal8(__m256 d2) {
  return _mm256_max_epi32(_mm256_castps_si256(d2), _mm256_set1_epi32(0x00800000));
}
#endif

// weighted_powers over a row of n pairs (bp may be d2: each is read before it is written), or,
// with w = nullptr, weighted_power alone (no division).
template <Power P, typename T>
inline void weighted_powers_row(const T* d2, const T* b, int64_t n, const PowerParams<T>& pw,
                                T* bp, T* w) {
  int64_t j = 0;
#ifdef EF_KERNEL_AVX2
  if constexpr (P == Power::kGeneral && std::is_same_v<T, float>) {
    const FloatPowerRegisters tables(pw.tables);
    for (; j + 8 <= n; j += 8) {
      const __m256 d2_here = _mm256_loadu_ps(d2 + j);
      const __m256i d_bits = at_least_min_normal8(d2_here);
      const __m256 power = _mm256_mul_ps(weights_where_positive8(d2_here, b + j),
                                         power_by_tables8(d_bits, tables));
      _mm256_storeu_ps(bp + j, power);
      if (w) _mm256_storeu_ps(w + j, _mm256_div_ps(power, _mm256_castsi256_ps(d_bits)));
    }
  }
#endif
  if (w) {
#pragma omp simd
    for (int64_t i = j; i < n; ++i) weighted_powers<P>(d2[i], b[i], pw, bp[i], w[i]);
  } else {
#pragma omp simd
    for (int64_t i = j; i < n; ++i) bp[i] = weighted_power<P>(d2[i], b[i], pw);
  }
}
