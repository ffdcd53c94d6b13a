// One warp's 64x64 tile of C (+)= A @ B^T on the tensor cores (bf16 in, fp32 accumulate).
// A: rows m0..m0+63 of an (M, K) bf16 matrix, row stride lda elements; B: rows n0..n0+63 of an
// (N, K) bf16 matrix, row stride ldb; C: fp32, row stride ldc. K a multiple of 16, lda/ldb even.
// Fragment layout (PTX ISA, mma.m16n8k16 .bf16): lane l, g = l / 4, t = l % 4; A regs hold k pairs
// (row g / g+8, pair t / t+4); B regs hold k pairs (column g, pair t / t+4); C elements
// (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
#define MMA(c, a, b) asm volatile( \
  "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};" \
  : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) \
  : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))

extern "C" __device__ int mma_warp_tile(int* status, unsigned long long a_addr, unsigned long long b_addr,
                                        unsigned long long c_addr, int lda, int ldb, int ldc, int k_len,
                                        int accumulate, int lane) {
  const unsigned* A = (const unsigned*)a_addr;
  const unsigned* B = (const unsigned*)b_addr;
  float* C = (float*)c_addr;
  const int g = lane >> 2, t = lane & 3, lda2 = lda >> 1, ldb2 = ldb >> 1;
  float acc[4][8][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;
  for (int k2 = 0; k2 < (k_len >> 1); k2 += 8) {
    unsigned a[4][4], b[8][2];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const unsigned* r = A + (16 * i + g) * lda2 + k2 + t;
      a[i][0] = __ldg(r); a[i][1] = __ldg(r + 8 * lda2); a[i][2] = __ldg(r + 4); a[i][3] = __ldg(r + 8 * lda2 + 4);
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const unsigned* r = B + (8 * j + g) * ldb2 + k2 + t;
      b[j][0] = __ldg(r); b[j][1] = __ldg(r + 4);
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 8; j++) MMA(acc[i][j], a[i], b[j]);
  }
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 8; j++) {
      float* p = C + (16 * i + g) * ldc + 8 * j + 2 * t;
      float* q = p + 8 * ldc;
      if (accumulate) { p[0] += acc[i][j][0]; p[1] += acc[i][j][1]; q[0] += acc[i][j][2]; q[1] += acc[i][j][3]; }
      else { p[0] = acc[i][j][0]; p[1] = acc[i][j][1]; q[0] = acc[i][j][2]; q[1] = acc[i][j][3]; }
    }
  *status = 0;
  return 0;
}
