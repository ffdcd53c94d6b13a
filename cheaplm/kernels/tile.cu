// One thread block's 128x128 tile of C (+)= A @ B^T on the tensor cores (bf16 in, fp32 accumulate).
//
// A: (M, K) bf16, row stride lda elements; B: (N, K) bf16, row stride ldb; C: (M, N) fp32, row
// stride ldc. The block computes rows m0..m0+127 and columns n0..n0+127, those that exist: M and N
// are multiples of 64, K and the strides multiples of 8 (16-byte chunks), A and B 16-byte aligned
// (C only 4-byte: its stores pair columns where it is 8-byte aligned).
//
// How (the Ampere-style pipeline that mma.sync needs; Hopper's wgmma would need sm_90a):
// - 256 threads = 8 warps as 2 (rows) x 4 (columns); a warp owns a 64x32 piece of C, 64 fp32
//   accumulators a thread.
// - K is read in steps of 32. Each step's A and B slabs (128x32 each, 8 KB each) are copied from
//   global to shared memory by cp.async, 16 bytes a thread a copy, three steps in flight (48 KB,
//   the static limit), so the loads of step s+2 overlap the products of step s.
// - In shared memory a slab row is 64 bytes = four 16-byte chunks; chunk c of row r is stored at
//   chunk c ^ ((r >> 1) & 3), so the eight rows that one ldmatrix phase reads fall in eight
//   different 16-byte bank groups (no conflicts) while cp.async still writes whole 128-byte lines.
// - ldmatrix.x4 loads a warp's fragments: one instruction gives a 16x16 piece of A (the four 8x8
//   matrices in mma's a0..a3 order) or two 8-column pieces of B (b0, b1 of each).
// - Rows past M and chunks past K are zero-filled by cp.async (src-size 0); a warp whose 64 rows or
//   32 columns lie past M or N stores nothing (M, N multiples of 64 make that whole warps).
// Fragment layout (PTX ISA, mma.m16n8k16 .bf16): lane l, g = l / 4, t = l % 4; C elements
// (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).

#define BM 128
#define BN 128
#define BK 32
#define STAGES 3
#define THREADS 256

#define MMA(c, a, b0, b1) asm volatile( \
  "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};" \
  : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) \
  : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

__device__ __forceinline__ unsigned swz(int row, int chunk) {  // byte offset in a 64-byte-row slab
  return (unsigned)(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

__device__ __forceinline__ void cp_async16(unsigned dst, const char* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}

__device__ __forceinline__ void ldmatrix4(unsigned* r, unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// copy K-step `kt` of a 128-row slab (rows r0.., stride ld elements, rows < rows_left valid) to
// shared memory at byte address `dst`: 512 chunks, two per thread
__device__ __forceinline__ void load_slab(unsigned dst, const char* base, int ld, int rows_left, int k_len,
                                          int kt, int tid) {
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int id = tid + i * THREADS, row = id >> 2, chunk = id & 3;
    const int k = kt * BK + chunk * 8;
    const bool ok = row < rows_left && k < k_len;
    const char* src = ok ? base + ((long long)row * ld + k) * 2 : base;
    cp_async16(dst + swz(row, chunk), src, ok ? 16 : 0);
  }
}

extern "C" __device__ int mma_block_tile(int* status, unsigned long long a_addr, unsigned long long b_addr,
                                         unsigned long long c_addr, int m, int n, int k_len, int lda, int ldb,
                                         int ldc, int accumulate, int m0, int n0, int tid) {
  __shared__ __align__(128) unsigned char smem[STAGES * (BM + BN) * BK * 2];
  const unsigned s_base = (unsigned)__cvta_generic_to_shared(smem);
  const unsigned slab = BM * BK * 2;  // bytes of one operand's slab
  const char* A = (const char*)a_addr + (long long)m0 * lda * 2;
  const char* B = (const char*)b_addr + (long long)n0 * ldb * 2;
  const int rows_a = m - m0, rows_b = n - n0;
  const int lane = tid & 31, warp = tid >> 5, wm = (warp & 1) * 64, wn = (warp >> 1) * 32;
  const int k_steps = (k_len + BK - 1) / BK;

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < k_steps) {
      load_slab(s_base + s * 2 * slab, A, lda, rows_a, k_len, s, tid);
      load_slab(s_base + s * 2 * slab + slab, B, ldb, rows_b, k_len, s, tid);
    }
    asm volatile("cp.async.commit_group;\n" ::);
  }

  for (int kt = 0; kt < k_steps; kt++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2));
    __syncthreads();  // step kt is in shared memory for all, and step kt-1's stage is free
    const int nk = kt + STAGES - 1;
    if (nk < k_steps) {
      const unsigned st = s_base + (nk % STAGES) * 2 * slab;
      load_slab(st, A, lda, rows_a, k_len, nk, tid);
      load_slab(st + slab, B, ldb, rows_b, k_len, nk, tid);
    }
    asm volatile("cp.async.commit_group;\n" ::);
    const unsigned sa = s_base + (kt % STAGES) * 2 * slab, sb = sa + slab;
#pragma unroll
    for (int kk = 0; kk < 2; kk++) {  // two k16 steps per slab
      unsigned a[4][4], b[4][2];
#pragma unroll
      for (int i = 0; i < 4; i++) ldmatrix4(a[i], sa + swz(wm + i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
      for (int jj = 0; jj < 2; jj++) {
        unsigned r[4];
        ldmatrix4(r, sb + swz(wn + jj * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
        b[2 * jj][0] = r[0]; b[2 * jj][1] = r[1]; b[2 * jj + 1][0] = r[2]; b[2 * jj + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) MMA(acc[i][j], a[i], b[j][0], b[j][1]);
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::);

  if (m0 + wm < m && n0 + wn < n) {
    const int g = lane >> 2, t = lane & 3;
    float* C = (float*)c_addr + (long long)(m0 + wm) * ldc + n0 + wn;
    // pairs of columns as one 8-byte access where C allows it (a block of a flat parameter buffer
    // may start at an odd element)
    const bool pairs = ((c_addr & 7) == 0) && ((ldc & 1) == 0);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        float* p = C + (long long)(i * 16 + g) * ldc + j * 8 + 2 * t;
        float* q = p + 8LL * ldc;
        if (pairs) {
          float2 lo = make_float2(acc[i][j][0], acc[i][j][1]), hi = make_float2(acc[i][j][2], acc[i][j][3]);
          if (accumulate) {
            const float2 u = *(float2*)p, v = *(float2*)q;
            lo.x += u.x; lo.y += u.y; hi.x += v.x; hi.y += v.y;
          }
          *(float2*)p = lo;
          *(float2*)q = hi;
        } else if (accumulate) {
          p[0] += acc[i][j][0]; p[1] += acc[i][j][1]; q[0] += acc[i][j][2]; q[1] += acc[i][j][3];
        } else {
          p[0] = acc[i][j][0]; p[1] = acc[i][j][1]; q[0] = acc[i][j][2]; q[1] = acc[i][j][3];
        }
      }
  }
  *status = 0;
  return 0;
}
