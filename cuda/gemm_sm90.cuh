// Hopper GEMM (sm_90a) for the bf16 path of gemm_bf16.cuh: wgmma fed by the tensor memory
// accelerator (TMA), persistent, warp-specialized.
//   C (M, N) = [C +] A (M, K) · B (N, K)ᵀ [+ bias] [+ residual] [GELU]   (A, B bf16 K-major or MN-major;
//   C fp32 or bf16)
// Shape of the kernel (Traits below):
//   - a CTA owns a BM × BN output tile at a time and loops over tiles (and split-K pieces) with a
//     stride of gridDim.x: the grid is at most one CTA per multiprocessor (persistent);
//   - warpgroup 0 is the producer: one thread issues TMA copies of the A (BM × 64) and B (BN × 64)
//     K-tiles into a ring of kStages shared-memory stages, each completing on that stage's `full`
//     mbarrier (expect_tx of the stage's bytes);
//   - warpgroups 1..kConsumers are consumers: each owns 64 rows of the tile, waits on `full`, issues
//     four wgmma m64nBNk16 (one per 16-wide K slice) with both operands read from shared memory by
//     descriptor, and releases the stage of the previous K-tile on its `empty` mbarrier once at most
//     one wgmma group is in flight (so TMA refills overlap the tensor cores);
//   - the epilogue goes from the accumulator registers straight to global memory through
//     store_epilogue (accumulate, bias, residual, GELU, or the split-K partial), while the producer
//     already loads the next tile's stages.
// Invariants:
//   - shared tiles are K-major rows of 64 bf16 (128 bytes) in TMA's 128-byte swizzle: row r at
//     r·128 bytes, its 16-byte chunks permuted by chunk ^ (r % 8); eight rows form a 1024-byte atom,
//     so every tile (and each consumer's 64-row slice of A) starts 1024-byte aligned, and the wgmma
//     descriptor has stride-byte-offset 1024 and layout "128B swizzle"; the k-th 16-wide slice is
//     the same descriptor with its start moved by 32·k bytes (the swizzle is applied to the
//     address bits, as TMA wrote them);
//   - an MN-major operand (a_mn_major / b_mn_major: stored (K, M) or (K, N), the input-gradient
//     GEMM's weight and both operands of the weight-gradient GEMM) is read as it is stored: TMA
//     loads boxes of 64 MN elements (128 bytes) × 64 K rows in the same 128-byte swizzle, one box
//     per 64 tile rows (8 KB each, back to back: a stage holds as many bytes as in K-major form);
//     wgmma reads it with imm-trans = 1 and the MN-major descriptor (smem_desc_mn): the PTX ISA's
//     canonical MN-major 128B layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)) (T = 8 bf16), i.e. K row
//     k at 128·k bytes with SBO 1024 between 8-row groups, and LBO 8192 between 64-element MN
//     blocks (the next box); the k-th 16-wide slice starts 16 K rows = 2048 bytes further;
//   - what CUTLASS/CuTe says about the two points the PTX ISA text leaves open (NVIDIA/cutlass
//     include/cute, read at 7107b05; make_gmma_desc was run on the host for these layouts):
//     (a) LBO of an MN-major operand with a single 64-element MN block is never used: the
//     canonical layout multiplies it by the block index, always 0; make_gmma_desc writes 0 there
//     (our A slice) and, for our box-ordered B tile, exactly smem_desc_mn's fields (LBO 8192,
//     SBO 1024, start + 2048 per slice; layout type 1 = 128B, base_offset 0). We keep 8192 for A
//     too (harmless). K-major 128B: LBO 1 ("unused, assumed 1"), SBO 1024, start + 32 per slice,
//     as here (mma_sm90_desc.hpp, mma_traits_sm90_gmma.hpp: make_gmma_desc, DescriptorIterator);
//     (b) the 128B swizzle is Swizzle<3,4,3> on byte addresses: bits 4-6 ^= bits 7-9, the same
//     for TMA SWIZZLE_128B (16-byte base) and wgmma layout type 1; the pattern is anchored to the
//     absolute shared address, so a tile must start 1024-byte aligned (pointer_flagged.hpp: the
//     swizzle is "acting on byte-addressed pointers", its alignment assert masks 0x3FF;
//     copy_traits_sm90_tma_swizzle.hpp: Swizzle<3,4,3> <-> B128, base 16B);
//   - TMA zero-fills whatever lies outside the (M or N) × K tensor, so edge tiles and the last
//     K-tile need no masking; split pieces are whole K-tiles (k_split is a multiple of kBK);
//   - the accumulator of thread t of a consumer (warp w = t/32, lane l) holds, for n8-block i,
//     d[4i], d[4i+1] at (row 16w + l/4, cols 8i + 2(l%4) + {0,1}) and d[4i+2], d[4i+3] at row + 8
//     (PTX ISA, wgmma D fragment for .f32 accumulators);
//   - compiled only for sm_90a (wgmma); other targets get an empty kernel, and the host checks with
//     sm90a_kernels_loaded() which cubin the runtime chose before selecting this path;
//   - the CTA's work is cta_body, a __host__ __device__ template over an Ops policy (barriers, TMA,
//     wgmma, epilogue store): DeviceOps is the PTX; cuda/dev/gemm_sm90_emulate.cu runs the same body
//     on the CPU with the operations emulated from the PTX ISA (launch_plan gives it the tensor maps'
//     encode arguments and the grid).
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/gemm_bf16.cuh"

namespace emae::cuda::sm90 {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define EMAE_SM90A_DEVICE 1
#else
#define EMAE_SM90A_DEVICE 0
#endif

template <int BN_>
struct Traits {
  static constexpr int kBM = 128, kBN = BN_, kBK = 64, kStages = BN_ == 256 ? 3 : 4;
  static constexpr int kConsumers = kBM / 64;                // warpgroups, 64 rows (wgmma M) each
  static constexpr int kThreads = 128 * (1 + kConsumers);    // + the producer warpgroup
  static constexpr int kAccum = kBN / 2;                     // fp32 accumulators per consumer thread
  static constexpr int kABytes = kBM * kBK * 2, kBBytes = kBN * kBK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;     // TMA bytes per stage (full boxes, OOB included)
  static constexpr int kSmemBytes = 1024 + kStages * kStageBytes + 2 * kStages * 8;  // align slack, tiles, barriers
  static constexpr int kEmptyArrivals = 4 * kConsumers;     // one per consumer warp
  // BN = 256 moves registers from the producer to the consumers (setmaxnreg); the pool is what the
  // kernel was given at launch, so it must hold 40 · 128 + 232 · 256 = 168 · 384 (launch() checks)
  static constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  static_assert(kBK * 2 == 128, "a K-tile row is one 128-byte swizzle span");
  static_assert(kBM % 64 == 0 && kConsumers >= 1, "consumers own 64 rows each");
  static_assert(kBN % 16 == 0 && kBN >= 16 && kBN <= 256, "wgmma N and the TMA box (≤ 256 rows)");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "tiles start on 1024-byte swizzle atoms");
  static_assert(kSmemBytes <= 227 * 1024, "fits a Hopper multiprocessor's shared memory");
};

// wgmma m64nNk16 with imm-trans-a / imm-trans-b (1: that operand is MN-major in shared memory).
template <int N, bool kTransA, bool kTransB> struct Wgmma;

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row atoms 1024 bytes apart.
__host__ __device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4)  // start address
         | (uint64_t)1 << 16                // leading byte offset (unused by swizzled K-major)
         | (uint64_t)(1024 >> 4) << 32      // stride byte offset: next 8-row atom
         | (uint64_t)1 << 62;               // layout: 128-byte swizzle
}
// Bytes of one TMA box of an MN-major operand: 64 MN elements × 64 K rows.
constexpr uint32_t kMnBoxBytes = 64 * 64 * 2;
// Shared-memory matrix descriptor: MN-major, 128-byte swizzle; K rows of 64 MN elements (128 bytes),
// 8-row groups 1024 bytes apart (SBO), 64-element MN blocks a box apart (LBO).
__host__ __device__ __forceinline__ uint64_t smem_desc_mn(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4)     // start address
         | (uint64_t)(kMnBoxBytes >> 4) << 16  // leading byte offset: next 64 MN elements
         | (uint64_t)(1024 >> 4) << 32         // stride byte offset: next 8 K rows
         | (uint64_t)1 << 62;                  // layout: 128-byte swizzle
}
// The descriptor of the k-th 16-wide K slice of a tile at addr: K-major moves 16 elements (32
// bytes) along each row, MN-major 16 K rows (2048 bytes).
template <bool kMnMajor>
__host__ __device__ __forceinline__ uint64_t slice_desc(uint32_t addr, int k) {
  if constexpr (kMnMajor) return smem_desc_mn(addr + 16 * 128 * k);
  else return smem_desc(addr + 32 * k);
}
#if EMAE_SM90A_DEVICE
#include "cuda/gemm_sm90_wgmma.inc"
#endif

#if EMAE_SM90A_DEVICE
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
// Waits until the phase with this parity has completed (a fresh barrier counts parity 1 as done).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, int parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
// 2-D TMA load of the box at (c0 = K element, c1 = row) into dst, completing on bar.
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(
          smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
      : "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int InFlight>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(InFlight) : "memory");
}

// The sm_90a side of cta_body's Ops policy; Epi: the epilogue's instantiation (Epilogue in gemm_bf16.cuh).
template <class Epi>
struct DeviceOps {
  const CUtensorMap* map_a;
  const CUtensorMap* map_b;
  __device__ __forceinline__ unsigned thread() const { return threadIdx.x; }
  __device__ __forceinline__ unsigned block() const { return blockIdx.x; }
  __device__ __forceinline__ unsigned grid() const { return gridDim.x; }
  __device__ __forceinline__ uint32_t shared_addr(const void* p) const { return smem_addr(p); }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
  __device__ __forceinline__ void init(uint64_t* bar, int count) const { mbar_init(bar, count); }
  __device__ __forceinline__ void fence_init() const {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __device__ __forceinline__ void wait(uint64_t* bar, int parity) const { mbar_wait(bar, parity); }
  __device__ __forceinline__ void expect_tx(uint64_t* bar, int bytes) const { mbar_expect_tx(bar, bytes); }
  __device__ __forceinline__ void arrive(uint64_t* bar) const { mbar_arrive(bar); }
  __device__ __forceinline__ void load_a(void* dst, int c0, int c1, uint64_t* bar) const {
    tma_load(dst, map_a, c0, c1, bar);
  }
  __device__ __forceinline__ void load_b(void* dst, int c0, int c1, uint64_t* bar) const {
    tma_load(dst, map_b, c0, c1, bar);
  }
  template <int Regs>
  __device__ __forceinline__ void release_regs() const {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(Regs));
  }
  template <int Regs>
  __device__ __forceinline__ void claim_regs() const {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(Regs));
  }
  __device__ __forceinline__ void mma_fence() const { wgmma_fence(); }
  // Pins the accumulators' register accesses in program order (no instruction): the wgmma asm
  // statements are the only ones naming them, so the compiler could otherwise move their zeroing
  // past wgmma.fence or the epilogue's reads above wgmma.wait_group (CUTLASS: warpgroup_fence_operand).
  template <int N>
  __device__ __forceinline__ void fence_acc(float (&acc)[N]) const {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(acc[i])::"memory");
  }
  template <int BN, bool kTransA, bool kTransB>
  __device__ __forceinline__ void mma(float (&acc)[BN / 2], uint64_t desc_a, uint64_t desc_b) const {
    Wgmma<BN, kTransA, kTransB>::mma(acc, desc_a, desc_b);
  }
  __device__ __forceinline__ void mma_commit() const { wgmma_commit(); }
  template <int InFlight>
  __device__ __forceinline__ void mma_wait() const { wgmma_wait<InFlight>(); }
  __device__ __forceinline__ void store(const GemmBf16Params& p, int split, int row, int col, float v0,
                                        float v1) const {
    Epi::store(p, split, row, col, v0, v1);
  }
};
#endif

// One work item: a tile and a split-K piece, in the same order for the producer and consumers.
struct WorkItem {
  int m0, n0, split, k_begin, k_tiles;
};
template <int BN>
__host__ __device__ __forceinline__ WorkItem work_item(const GemmBf16Params& p, int item, int tiles_n) {
  using T = Traits<BN>;
  WorkItem w;
  w.split = item % p.splits;
  const int tile = item / p.splits;
  w.m0 = (tile / tiles_n) * T::kBM;
  w.n0 = (tile % tiles_n) * T::kBN;
  w.k_begin = w.split * p.k_split;
  const int k_end = min(p.K, w.k_begin + p.k_split);
  w.k_tiles = (k_end - w.k_begin + T::kBK - 1) / T::kBK;
  return w;
}

// One CTA of the kernel: thread ops.thread() of block ops.block() in a grid of ops.grid(), dynamic
// shared memory at smem_raw. Ops: DeviceOps on the GPU, the CPU emulation's policy on the host.
// kTransA, kTransB: p.a_mn_major, p.b_mn_major (with_operand_majors).
#pragma nv_exec_check_disable
template <int BN, bool kTransA, bool kTransB, class Ops>
__host__ __device__ __forceinline__ void cta_body(const GemmBf16Params& p, int items, int tiles_n, uint8_t* smem_raw,
                                                  Ops& ops) {
  using T = Traits<BN>;
  static_assert(!kTransB || T::kBN % 64 == 0, "an MN-major B tile is whole 64-element boxes");
  static_assert(kMnBoxBytes == 64 * T::kBK * 2, "an MN-major box is 64 elements × the K-tile");
  uint8_t* smem = smem_raw + ((1024 - (ops.shared_addr(smem_raw) & 1023)) & 1023);  // 1024-byte aligned
  uint8_t* a_tiles = smem;                                                           // [kStages][kBM][64] bf16
  uint8_t* b_tiles = smem + T::kStages * T::kABytes;                                 // [kStages][kBN][64] bf16
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + T::kStages * T::kStageBytes);
  uint64_t* empty = full + T::kStages;

  if (ops.thread() == 0) {
    for (int s = 0; s < T::kStages; ++s) {
      ops.init(&full[s], 1);
      ops.init(&empty[s], T::kEmptyArrivals);
    }
    ops.fence_init();
  }
  ops.sync();

  const int warpgroup = ops.thread() / 128, t = ops.thread() % 128;
  if (warpgroup == 0) {  // producer
    if constexpr (BN == 256) ops.template release_regs<Traits<BN>::kProducerRegs>();
    if (t != 0) return;
    int stage = 0, phase = 0;
    for (int item = ops.block(); item < items; item += ops.grid()) {
      const WorkItem w = work_item<BN>(p, item, tiles_n);
      for (int kt = 0; kt < w.k_tiles; ++kt) {
        ops.wait(&empty[stage], phase ^ 1);  // the consumers released this stage (fresh: passes)
        ops.expect_tx(&full[stage], T::kStageBytes);
        const int k = w.k_begin + kt * T::kBK;
        uint8_t* a = a_tiles + stage * T::kABytes;
        uint8_t* b = b_tiles + stage * T::kBBytes;
        if constexpr (kTransA) {  // boxes at (MN element, K row)
#pragma unroll
          for (int j = 0; j < T::kBM / 64; ++j) ops.load_a(a + j * kMnBoxBytes, w.m0 + 64 * j, k, &full[stage]);
        } else {
          ops.load_a(a, k, w.m0, &full[stage]);
        }
        if constexpr (kTransB) {
#pragma unroll
          for (int j = 0; j < T::kBN / 64; ++j) ops.load_b(b + j * kMnBoxBytes, w.n0 + 64 * j, k, &full[stage]);
        } else {
          ops.load_b(b, k, w.n0, &full[stage]);
        }
        if (++stage == T::kStages) stage = 0, phase ^= 1;
      }
    }
    return;
  }

  // consumers
  if constexpr (BN == 256) ops.template claim_regs<Traits<BN>::kConsumerRegs>();
  const int consumer = warpgroup - 1, warp = t / 32, lane = t % 32;
  // this consumer's 64 rows: 64 K-major rows of 128 bytes, or the consumer's MN-major box
  const uint32_t a_base = ops.shared_addr(a_tiles) + consumer * 64 * 128;
  const uint32_t b_base = ops.shared_addr(b_tiles);
  int stage = 0, phase = 0;
  float acc[T::kAccum];
  for (int item = ops.block(); item < items; item += ops.grid()) {
    const WorkItem w = work_item<BN>(p, item, tiles_n);
#pragma unroll
    for (int i = 0; i < T::kAccum; ++i) acc[i] = 0.f;
    int prev_stage = -1;
    for (int kt = 0; kt < w.k_tiles; ++kt) {
      ops.wait(&full[stage], phase);
      ops.fence_acc(acc);
      ops.mma_fence();
#pragma unroll
      for (int k = 0; k < T::kBK / 16; ++k)
        ops.template mma<BN, kTransA, kTransB>(acc, slice_desc<kTransA>(a_base + stage * T::kABytes, k),
                                               slice_desc<kTransB>(b_base + stage * T::kBBytes, k));
      ops.mma_commit();
      ops.template mma_wait<1>();  // the previous K-tile's group is done reading its stage
      if (prev_stage >= 0 && lane == 0) ops.arrive(&empty[prev_stage]);
      prev_stage = stage;
      if (++stage == T::kStages) stage = 0, phase ^= 1;
    }
    ops.template mma_wait<0>();
    ops.fence_acc(acc);
    if (prev_stage >= 0 && lane == 0) ops.arrive(&empty[prev_stage]);

    const int row = w.m0 + consumer * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int i = 0; i < T::kBN / 8; ++i) {
      const int col = w.n0 + i * 8 + 2 * (lane % 4);
      ops.store(p, w.split, row, col, acc[4 * i], acc[4 * i + 1]);
      ops.store(p, w.split, row + 8, col, acc[4 * i + 2], acc[4 * i + 3]);
    }
  }
}

// Epi: the epilogue instantiation (with_epilogue(p)); kTransA, kTransB: MN-major A, B.
template <int BN, class Epi, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(Traits<BN>::kThreads, 1)
    gemm_sm90_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                     const GemmBf16Params p, int items, int tiles_n) {
#if EMAE_SM90A_DEVICE
  extern __shared__ uint8_t smem_raw[];
  DeviceOps<Epi> ops{&map_a, &map_b};
  cta_body<BN, kTransA, kTransB>(p, items, tiles_n, smem_raw, ops);
#endif
}

// Writes 1 when the runtime loaded this translation unit's sm_90a code on the current device.
static __global__ void sm90a_probe_kernel(int* out) { *out = EMAE_SM90A_DEVICE; }

// Whether the current device runs this build's sm_90a kernels (compute capability 9.0 and an
// sm_90a cubin in the binary that the runtime chose over the plain sm_90 one).
inline bool sm90a_kernels_loaded() {
  int device = 0, major = 0, minor = 0;
  EMAE_CUDA_CHECK(cudaGetDevice(&device));
  EMAE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  EMAE_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major != 9 || minor != 0) return false;
  int* flag = nullptr;
  EMAE_CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
  int loaded = 0;
  sm90a_probe_kernel<<<1, 1>>>(flag);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaMemcpy(&loaded, flag, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(flag);
  EMAE_CUDA_CHECK(err);
  return loaded == 1;
}

namespace detail {

// cuTensorMapEncodeTiled from the driver, found through the runtime (no link against libcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    EMAE_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &found));
#else  // CUDA 12.0–12.4: the unversioned lookup (deprecated from 12.5 on)
    EMAE_CUDA_CHECK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &ptr, cudaEnableDefault, &found));
#endif
    if (found != cudaDriverEntryPointSuccess || !ptr) throw CudaError("cuTensorMapEncodeTiled is not available from the driver");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// The arguments of cuTensorMapEncodeTiled for one operand (the CPU emulation reads them too).
struct TensorMapArgs {
  CUtensorMapDataType type;
  cuuint32_t rank;
  const bf16* base;
  cuuint64_t dims[2];
  cuuint64_t strides[1];
  cuuint32_t box[2];
  cuuint32_t element_strides[2];
  CUtensorMapInterleave interleave;
  CUtensorMapSwizzle swizzle;
  CUtensorMapL2promotion l2_promotion;
  CUtensorMapFloatOOBfill oob_fill;
};

// rows × cols bf16, cols contiguous, row stride ld elements; boxes of box_rows × 64, 128-byte
// swizzle, zero fill. K-major operands: rows = M or N, cols = K; MN-major: rows = K, cols = M or N.
inline TensorMapArgs tensor_map_args(const bf16* base, int rows, int cols, int ld, int box_rows) {
  return {CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base,
          {(cuuint64_t)cols, (cuuint64_t)rows}, {(cuuint64_t)ld * sizeof(bf16)}, {64, (cuuint32_t)box_rows}, {1, 1},
          CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE};
}

inline CUtensorMap tensor_map(const TensorMapArgs& a) {
  CUtensorMap map{};
  const CUresult r = encode_tiled()(&map, a.type, a.rank, const_cast<bf16*>(a.base), a.dims, a.strides, a.box,
                                    a.element_strides, a.interleave, a.swizzle, a.l2_promotion, a.oob_fill);
  if (r != CUDA_SUCCESS)
    throw CudaError("cuTensorMapEncodeTiled failed (" + std::to_string((int)r) + ") for a " +
                    std::to_string(a.dims[1]) + " × " + std::to_string(a.dims[0]) + " bf16 operand, ld " +
                    std::to_string(a.strides[0] / sizeof(bf16)));
  return map;
}

}  // namespace detail

// Calls f(ta, tb) with std::bool_constant<p.a_mn_major>, <p.b_mn_major>: the kernel's wgmma
// transpose immediates (launch and the CPU emulation choose with this).
template <class F>
inline void with_operand_majors(const GemmBf16Params& p, F&& f) {
  using T = std::true_type;
  using F0 = std::false_type;
  if (p.a_mn_major && p.b_mn_major) f(T{}, T{});
  else if (p.a_mn_major) f(T{}, F0{});
  else if (p.b_mn_major) f(F0{}, T{});
  else f(F0{}, F0{});
}

// What launch runs for p: the kernel's parameters, the operands' tensor maps (as encode arguments),
// the work items and the grid.
struct LaunchPlan {
  GemmBf16Params params;
  detail::TensorMapArgs map_a, map_b;
  int items, tiles_n, grid;
};
template <int BN = 128>
inline LaunchPlan launch_plan(const GemmBf16Params& p, int sms) {
  using T = Traits<BN>;
  LaunchPlan plan;
  plan.params = p;
  if (p.splits == 1) {
    plan.params.k_split = std::max(p.K, 1);  // one piece covers all of K (k_split 0 means that too)
  } else if (p.splits < 1 || p.k_split <= 0 || p.k_split % T::kBK || (long long)p.k_split * p.splits < p.K) {
    throw std::invalid_argument("gemm_sm90: k_split must be a positive multiple of " + std::to_string(T::kBK) +
                                " with splits · k_split >= K");
  }
  plan.map_a = p.a_mn_major ? detail::tensor_map_args(p.A, p.K, p.M, p.lda, T::kBK)
                            : detail::tensor_map_args(p.A, p.M, p.K, p.lda, T::kBM);
  plan.map_b = p.b_mn_major ? detail::tensor_map_args(p.B, p.K, p.N, p.ldb, T::kBK)
                            : detail::tensor_map_args(p.B, p.N, p.K, p.ldb, T::kBN);
  plan.tiles_n = ceil_div(p.N, T::kBN);
  const long long items = (long long)ceil_div(p.M, T::kBM) * plan.tiles_n * p.splits;
  if (items > INT32_MAX) throw std::invalid_argument("gemm_sm90: too many tiles");
  plan.items = (int)items;
  plan.grid = (int)std::min<long long>(items, std::max(sms, 1));
  return plan;
}

template <int BN, class Epi, bool kTransA, bool kTransB>
inline void launch_kernel(const LaunchPlan& plan, cudaStream_t stream) {
  using T = Traits<BN>;
  static std::atomic<unsigned long long> smem_opt_in{0};  // one per instantiation
  allow_dynamic_smem(gemm_sm90_kernel<BN, Epi, kTransA, kTransB>, T::kSmemBytes, smem_opt_in);
  if constexpr (BN == 256) {  // fewer registers at launch than setmaxnreg claims: the kernel would wait forever
    static const int regs = [] {
      cudaFuncAttributes attr{};
      EMAE_CUDA_CHECK(cudaFuncGetAttributes(&attr, gemm_sm90_kernel<256, Epi, kTransA, kTransB>));
      return attr.numRegs;
    }();
    if (regs * T::kThreads < T::kProducerRegs * 128 + T::kConsumerRegs * 128 * T::kConsumers)
      throw CudaError("gemm_sm90<256>: compiled with " + std::to_string(regs) + " registers per thread, fewer than its setmaxnreg split needs");
  }
  const CUtensorMap map_a = detail::tensor_map(plan.map_a);
  const CUtensorMap map_b = detail::tensor_map(plan.map_b);
  gemm_sm90_kernel<BN, Epi, kTransA, kTransB><<<plan.grid, T::kThreads, T::kSmemBytes, stream>>>(map_a, map_b, plan.params,
                                                                                  plan.items, plan.tiles_n);
  EMAE_CHECK_LAUNCH("gemm_sm90_kernel");
}

// Runs p with its splits already chosen (k_split a multiple of kBK; any value, 0 included, when
// splits == 1); the caller reduces split partials (and their GELU). M, N, K > 0.
template <int BN = 128>
inline void launch(const GemmBf16Params& p, int sms, cudaStream_t stream) {
  const LaunchPlan plan = launch_plan<BN>(p, sms);
  with_epilogue(plan.params, [&](auto epi) {
    with_operand_majors(plan.params, [&](auto ta, auto tb) {
      launch_kernel<BN, decltype(epi), decltype(ta)::value, decltype(tb)::value>(plan, stream);
    });
  });
}

}  // namespace emae::cuda::sm90
