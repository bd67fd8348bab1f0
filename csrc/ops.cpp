// Operator schemas: defined once here; kernels are registered per dispatch key in cpu/ and cuda/.
#include <torch/library.h>

#include <vector>

namespace tangentlens {

std::vector<int64_t> build_info() {
#if defined(TANGENTLENS_WITH_CUDA)
  const int64_t cuda = 1, cuda_version = TANGENTLENS_CUDA_VERSION;
#else
  const int64_t cuda = 0, cuda_version = 0;
#endif
#if defined(_OPENMP)
  const int64_t openmp = 1;
#else
  const int64_t openmp = 0;
#endif
  return {cuda, cuda_version, openmp};
}

TORCH_LIBRARY(tangentlens, m) {
  m.def("build_info() -> int[]", &build_info);
  // Raw Philox4x32-10: counters int64 [N, 4] holding uint32 words, key = (lo32(seed), hi32(seed)).
  // Returns int64 [N, 4]. Exposed for the known-answer tests.
  m.def("philox4x32_10(Tensor counters, int seed) -> Tensor");
  // Standard normals: out[i, j] = normal j of row (start + i) in `stream` (seeds and rows are uint64
  // bit patterns carried in int64). out: [count, dim] with unit column stride, fp16/bf16/fp32/fp64.
  m.def("philox_normal_(Tensor(a!) out, int seed, int start, int stream) -> ()");
  // Path sampling (SPEC 4) in one pass. path_kind 0 = lerp, 1 = slerp. t: float64 [count], always written.
  // count = t.size(0). An output with zero rows is skipped; all written matrices share one dtype.
  // For lerp p0, p1 and tangent must be empty (the path is taken after the mapping network).
  m.def(
      "paths_sample_(Tensor(a!) z0, Tensor(b!) z1, Tensor(c!) t, Tensor(d!) p0, Tensor(e!) p1, "
      "Tensor(f!) tangent, int seed, int start, int dim, int path_kind, bool full, float eps) -> ()");
  // Row-wise interpolation of a, b [B, D] at t (float64 [B]); returns (p, tangent), tangent empty unless
  // with_tangent. Raises on rows where a or b is the zero vector (slerp).
  m.def("interpolate(Tensor a, Tensor b, Tensor t, int path_kind, bool with_tangent) -> (Tensor, Tensor)");
  // LPIPS layer head (SPEC 3). Feature maps [N, C, H, W], NCHW contiguous or channels_last (f0 and f1 alike);
  // weight [C] in float32 (float64 for float64 maps); eps_mode 0 = lpips (eps outside the sqrt), 1 = torchmetrics
  // (inside). Returns float32 [N] (float64 for float64 maps): mean over pixels of sum_c w_c (f0_hat - f1_hat)^2.
  m.def("lpips_layer_distance(Tensor f0, Tensor f1, Tensor weight, float eps, int eps_mode) -> Tensor");
  // Squared norms [N, K] (gram=False) or inner products [N, K, K] (gram=True) of the tangents of the weighted,
  // normalised embedding sqrt(w / (H W)) f_hat along tangents [N, K, C, H, W] of f (each [C, H, W] slice in
  // the layout of f).
  m.def("lpips_tangent_norm(Tensor f, Tensor tangents, Tensor weight, float eps, int eps_mode, bool gram) -> Tensor");
  // Fused bias + activation + gain + clamp (NVIDIA's bias_act): y = clamp(gain * act(x + b), -clamp, clamp) with
  // b [x.size(dim)] broadcast along dim (dim in [0, x.dim()), checked only when b is given). x contiguous, any rank,
  // fp16/bf16/fp32/fp64 (math in float, double for fp64); b of x's dtype. act: the activation code of
  // tangentlens.reference.bias_act.ACTIVATIONS (0 linear .. 8 swish); clamp < 0: no clamping. y has x's dtype.
  m.def("bias_act(Tensor x, Tensor? b, int dim, int act, float alpha, float gain, float clamp) -> Tensor");
  // bias_act and its forward-mode derivative in one pass: returns (y, ty) with ty [K, *x.shape] for the K tangents
  // tx [K, *x.shape] of x and tb [K, C] of b (or None): ty_k = gain act'(x + b) (tx_k + tb_k), 0 where the clamp is
  // active (|gain act(x + b)| > clamp; the boundary passes, as torch.clamp's derivative). Each element of x is read
  // once and its derivative computed once for all K tangents. tx, tb contiguous, of x's dtype.
  m.def(
      "bias_act_jvp(Tensor x, Tensor? b, Tensor tx, Tensor? tb, int dim, int act, float alpha, float gain, "
      "float clamp) -> (Tensor, Tensor)");
  // upfirdn2d (NVIDIA's contract): zero-insertion upsampling, padding (negative crops), FIR filtering with the
  // 2-D correlation filter f [fh, fw] (already flipped and gain-scaled; float32, float64 for float64 x),
  // subsampling. x [N, C, H, W] -> [N, C, out_h, out_w]. Linear in x: its JVP is itself on the tangent.
  m.def(
      "upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, int padx1, int pady0, "
      "int pady1) -> Tensor");
  // filtered_lrelu (StyleGAN3, NVIDIA's contract): y = down(fd, clamp(gain * lrelu(up(fu, x + b), slope))) per
  // channel, with up(fu, .) zero-insertion by `up`, padding (negative crops) and the FIR filter fu, and down(fd, .)
  // the FIR filter fd and subsampling by `down`. x [N, C, H, W] contiguous, fp16/bf16/fp32/fp64; b [C] of x's
  // dtype or None; fu, fd: correlation filters (already flipped; fu carries the upsampling gain) in float32
  // (float64 for float64 x), contiguous, 1-D (separable, the same taps along both axes) or 2-D [fh, fw]; clamp < 0:
  // none. Output [N, C, out_h, out_w], out_h = (H up + pady0 + pady1 - fuh - fdh + 1) // down + 1.
  m.def(
      "filtered_lrelu(Tensor x, Tensor fu, Tensor fd, Tensor? b, int up, int down, int padx0, int padx1, "
      "int pady0, int pady1, float gain, float slope, float clamp) -> Tensor");
  // filtered_lrelu and its forward-mode derivative in one pass: (y, ty) with ty [K, N, C, out_h, out_w] for the K
  // tangents tx [K, N, C, H, W] of x and tb [K, C] of b (or None): ty_k = down(fd, d * up(fu, tx_k + tb_k)), d the
  // primal's derivative gain * lrelu'(u) where the clamp does not bind, else 0 (its mask), computed once per
  // activation sample for all K tangents. tx, tb contiguous, of x's dtype.
  m.def(
      "filtered_lrelu_jvp(Tensor x, Tensor fu, Tensor fd, Tensor? b, Tensor tx, Tensor? tb, int up, int down, "
      "int padx0, int padx1, int pady0, int pady1, float gain, float slope, float clamp) -> (Tensor, Tensor)");
}

}  // namespace tangentlens
