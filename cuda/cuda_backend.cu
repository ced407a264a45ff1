// CUDA implementation of the Backend interface (native/core/backend.h). Every op is enqueued on
// one stream; the host waits for downloads, and inside a step where EMAE_CUDA_STEP_SYNC says
// (cuda/step_sync.cuh): host (the default) reads the losses and the step status back as they are
// made, once leaves the step's one wait to the status download at its end. Kernels live in the
// .cuh files beside this one.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/errors.h"
#include "core/profiling_backend.h"
#include "cuda/attention.cuh"
#include "cuda/attention_tc.cuh"
#include "cuda/classifier.cuh"
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"
#include "cuda/device_info.h"
#include "cuda/gemm.cuh"
#include "cuda/gemm_dispatch.cuh"
#include "cuda/layernorm.cuh"
#include "cuda/loss.cuh"
#include "cuda/optim.cuh"
#include "cuda/step_sync.cuh"
#include "cuda/tokens.cuh"

namespace emae::cuda {
namespace {

// A device buffer that only grows (scratch shared by the ops, which run one after another on
// the stream). Growing frees the old buffer: cudaFree waits for the device, so no op still uses it.
class Scratch {
 public:
  ~Scratch() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get(size_t bytes) {
    if (bytes > bytes_) {
      const size_t want = std::max(bytes, bytes_ * 2);
      if (ptr_) EMAE_CUDA_CHECK(cudaFree(ptr_));
      ptr_ = nullptr;
      bytes_ = 0;
      if (cudaMalloc(&ptr_, want) != cudaSuccess) {
        cudaGetLastError();
        throw OutOfMemory("cuda scratch", want);
      }
      bytes_ = want;
    }
    return ptr_;
  }
  template <typename T> T* get_as(size_t count) { return static_cast<T*>(get(count * sizeof(T))); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Pinned host memory for a step's inputs under EMAE_CUDA_STEP_SYNC=once: upload_input copies the
// bytes here and enqueues the transfer without waiting for it. Invariant: bytes [0, used) may still
// be read by transfers in flight until the stream is synchronized, after which the owner calls
// retire() and they are free again; take() never hands out bytes below used, so a staged input is
// never overwritten while its transfer may be pending.
class Staging {
 public:
  ~Staging() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  // bytes of staging after the ones in use, or null when they do not fit
  char* take(size_t bytes) {
    if (used_ + bytes > bytes_) return nullptr;
    char* at = ptr_ + used_;
    used_ += (bytes + kAlign - 1) / kAlign * kAlign;
    return at;
  }
  size_t used() const { return used_; }
  void retire() { used_ = 0; }  // the stream was synchronized: no transfer reads staging any more
  // At least `bytes` (only when retired: the old buffer is freed). Grows to twice the old size at
  // least, so a step's few inputs soon fit side by side.
  void reserve(size_t bytes) {
    if (bytes <= bytes_) return;
    const size_t want = std::max(bytes, bytes_ * 2);
    if (ptr_) EMAE_CUDA_CHECK(cudaFreeHost(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
    if (cudaHostAlloc(reinterpret_cast<void**>(&ptr_), want, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      ptr_ = nullptr;
      throw OutOfMemory("cudaHostAlloc (pinned staging for a step's inputs)", want);
    }
    bytes_ = want;
  }

 private:
  static constexpr size_t kAlign = 256;
  char* ptr_ = nullptr;
  size_t bytes_ = 0, used_ = 0;
};

// A view's typed device pointer: float for fp32 views, bf16 for bf16 views; the wrong type is a
// caller's bug (std::logic_error naming the argument).
template <class T> T* typed(Act v, const char* what) {
  if constexpr (std::is_same_v<T, float>) return v.f32(what);
  else return reinterpret_cast<T*>(v.bf16(what));
}
template <class T> const T* typed(ActIn v, const char* what) {
  if constexpr (std::is_same_v<T, float>) return v.f32(what);
  else return reinterpret_cast<const T*>(v.bf16(what));
}
// Calls f with v's typed pointer (float* or bf16*): the kernels are instantiated per storage type.
template <class V, class F> void with_storage(V v, F&& f) {
  if (v.is_bf16()) f(typed<bf16>(v, "activation"));
  else f(typed<float>(v, "activation"));
}
template <class T> using storage_of = std::remove_const_t<std::remove_pointer_t<T>>;

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DType activations) : device_(device), activations_(activations) {
    int count = 0;
    EMAE_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
      throw RangeError("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                       " found)");
    EMAE_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    EMAE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    if (prop.major < 8)
      throw RangeError(std::string("CUDA device ") + prop.name + " has compute capability " +
                       std::to_string(prop.major) + "." + std::to_string(prop.minor) + "; emae needs 8.0 or newer");
    name_ = std::string("cuda:") + std::to_string(device) + " (" + prop.name + ")";
    sms_ = prop.multiProcessorCount;
    gemm_path_ = select_gemm_path(activations);  // EMAE_CUDA_GEMM; a path this device cannot run throws here
    attention_path_ = select_attention_path();  // EMAE_CUDA_ATTENTION; an unknown value throws here
    step_sync_ = select_step_sync();            // EMAE_CUDA_STEP_SYNC; an unknown value throws here
    EMAE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (stream_) {
      cudaStreamSynchronize(stream_);  // no staged transfer still reads the pinned memory freed next
      cudaStreamDestroy(stream_);
    }
  }

  std::string name() const override { return name_; }
  // bf16: activations in bf16 and the GEMMs reading the bf16 weight copy adamw writes
  DType activation_dtype() const override { return activations_; }
  DType weight_dtype() const override { return activations_; }
  void convert_to_bf16(uint16_t* dst, const float* src, size_t n) override {
    bind();
    cuda::convert_to_bf16_flat(reinterpret_cast<bf16*>(dst), src, n, stream_);
  }

  // ---- memory --------------------------------------------------------------------------------
  void* allocate(size_t bytes) override {
    bind();
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (err != cudaSuccess) {
      cudaGetLastError();
      if (err == cudaErrorMemoryAllocation) throw OutOfMemory("cudaMalloc on " + name_, bytes);
      check(err, "cudaMalloc", __FILE__, __LINE__);
    }
    return p;
  }
  void release(void* ptr) override {
    bind();
    cudaFree(ptr);  // never throws from a destructor path
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    bind();
    EMAE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    synchronize();  // the host buffer may go away after return
  }
  void upload_input(void* dst, const void* src, size_t bytes) override {
    if (step_sync_ != StepSync::kOnce) return upload(dst, src, bytes);
    if (bytes == 0) return;
    bind();
    char* at = staging_.take(bytes);
    if (!at) {  // full: wait for the staged transfers, then reuse (or grow) the buffer from its start
      const size_t step_bytes = staging_.used() + bytes;
      synchronize();
      staging_.reserve(step_bytes);
      at = staging_.take(bytes);
    }
    std::memcpy(at, src, bytes);
    EMAE_CUDA_CHECK(cudaMemcpyAsync(dst, at, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    bind();
    EMAE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }
  void zero(void* dst, size_t bytes) override {
    bind();
    EMAE_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    bind();
    EMAE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }

  // ---- ops -----------------------------------------------------------------------------------
  void matmul_forward(Act out, ActIn inp, ActIn weight, const float* bias, const float* residual, int R, int K,
                      int N) override {
    bind();
    cuda::matmul_forward_with(gemm_runner(), out, inp, weight, bias, residual, R, K, N);
  }
  void matmul_backward(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight, int R, int K,
                       int N, bool assign_dweight) override {
    backward(dinp, dweight, dbias, dout, inp, weight, nullptr, R, K, N, assign_dweight);
  }
  // The bf16 GEMM paths put the GELU in the GEMM's epilogue (gemm.cuh, epilogue_store); mma, the
  // verified default, keeps the composed ops (Backend's defaults) exactly as before.
  void matmul_gelu_forward(Act pre, Act act, ActIn inp, ActIn weight, const float* bias, int R, int K,
                           int N) override {
    if (gemm_path_ == GemmPath::kMma) return Backend::matmul_gelu_forward(pre, act, inp, weight, bias, R, K, N);
    bind();
    cuda::matmul_gelu_forward_with(gemm_runner(), pre, act, inp, weight, bias, R, K, N);
  }
  void matmul_backward_gelu(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight,
                            ActIn gelu_inp, int R, int K, int N, bool assign_dweight) override {
    if (gemm_path_ == GemmPath::kMma)
      return Backend::matmul_backward_gelu(dinp, dweight, dbias, dout, inp, weight, gelu_inp, R, K, N, assign_dweight);
    backward(dinp, dweight, dbias, dout, inp, weight, gelu_inp, R, K, N, assign_dweight);
  }
  void layernorm_forward(Act out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                         int R, int C, float eps) override {
    bind();
    with_storage(out, [&](auto* o) { cuda::layernorm_forward(o, mean, rstd, inp, weight, bias, R, C, eps, stream_); });
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, ActIn dout, const float* inp, const float* weight,
                          const float* mean, const float* rstd, int R, int C) override {
    bind();
    float* scratch = scratch_.get_as<float>(layernorm_scratch_floats(R, C));
    with_storage(dout, [&](const auto* d) {
      cuda::layernorm_backward(dinp, dweight, dbias, d, inp, weight, mean, rstd, R, C, scratch, stream_);
    });
  }
  // out, inp (and dout) share one storage type
  void gelu_forward(Act out, ActIn inp, size_t n) override {
    bind();
    with_storage(out, [&](auto* o) {
      using T = storage_of<decltype(o)>;
      cuda::gelu_forward(o, typed<T>(inp, "gelu_forward inp"), n, stream_);
    });
  }
  void gelu_backward(Act dinp, ActIn inp, ActIn dout, size_t n) override {
    bind();
    with_storage(dinp, [&](auto* d) {
      using T = storage_of<decltype(d)>;
      cuda::gelu_backward(d, typed<T>(inp, "gelu_backward inp"), typed<T>(dout, "gelu_backward dout"), n, stream_);
    });
  }
  void attention_forward(Act out, float* lse, ActIn qkv, int S, int T, int H, int dh) override {
    bind();
    cuda::attention_forward_on(attention_path_, out, lse, qkv, S, T, H, dh, stream_);
  }
  void attention_backward(Act dqkv, ActIn dout, ActIn qkv, ActIn out, const float* lse, int S, int T, int H,
                          int dh) override {
    bind();
    float* scratch = scratch_.get_as<float>(attention_backward_scratch_floats(S, T, H));
    cuda::attention_backward_on(attention_path_, dqkv, dout, qkv, out, lse, S, T, H, dh, scratch, stream_);
  }
  void gather_visible_patches(Act cols, const float* images, const int32_t* perm, const PartGeometry& g) override {
    bind();
    with_storage(cols, [&](auto* c) { cuda::gather_visible_patches(c, images, perm, g, stream_); });
  }
  void patchify_target(float* target, const float* images, const PartGeometry& g, bool norm_pix) override {
    bind();
    cuda::patchify_target(target, images, g, norm_pix, stream_);
  }
  void encoder_tokens_forward(float* x, ActIn emb, const float* cls_token, const float* pos_embed,
                              const int32_t* perm, const PartGeometry& g, int D) override {
    bind();
    with_storage(emb, [&](const auto* e) {
      cuda::encoder_tokens_forward(x, e, cls_token, pos_embed, perm, g, D, stream_);
    });
  }
  void encoder_tokens_backward(Act demb, float* dcls, const float* dx, const int32_t* perm, const PartGeometry& g,
                               int D) override {
    bind();
    float* scratch = scratch_.get_as<float>(column_sum_scratch_floats(g.batch * g.parts, D));
    with_storage(demb, [&](auto* d) { cuda::encoder_tokens_backward(d, dcls, dx, g, D, scratch, stream_); });
  }
  void decoder_tokens_forward(float* z, ActIn y, const float* mask_token, const float* dec_pos_embed,
                              const int32_t* perm, const PartGeometry& g, int Dd) override {
    bind();
    const int32_t* position_of = positions(perm, g);
    with_storage(y, [&](const auto* yy) {
      cuda::decoder_tokens_forward(z, yy, mask_token, dec_pos_embed, position_of, g, Dd, stream_);
    });
  }
  void decoder_tokens_backward(Act dy, float* dmask, const float* dz, const int32_t* perm, const PartGeometry& g,
                               int Dd) override {
    bind();
    const int32_t* position_of = positions(perm, g);
    float* scratch = scratch_.get_as<float>(decoder_tokens_scratch_floats(g, Dd));
    with_storage(dy, [&](auto* d) {
      cuda::decoder_tokens_backward(d, dmask, dz, perm, position_of, g, Dd, scratch, stream_);
    });
  }
  // pred and dpred share one storage type
  void loss_forward_backward(LossValues* losses, Act dpred, ActIn pred, const float* target, const int32_t* perm,
                             const PartGeometry& g, float lambda, bool l1) override {
    bind();
    const int32_t* position_of = positions(perm, g);
    double* scratch = scratch_.get_as<double>(loss_scratch_doubles(g));
    with_storage(dpred, [&](auto* d) {
      const auto* y = typed<storage_of<decltype(d)>>(pred, "loss_forward_backward pred");
      if (step_sync_ == StepSync::kOnce) {
        cuda::loss_forward_backward_into(losses, d, y, target, position_of, g, lambda, l1, scratch, stream_);
        return;
      }
      const LossValues values = cuda::loss_forward_backward(d, y, target, position_of, g, lambda, l1, scratch, stream_);
      upload(losses, &values, sizeof(values));
    });
  }

  // ---- fine-tuning (cuda/classifier.cuh) -------------------------------------------------------
  void column_sum_accumulate(float* dst, const float* src, int R, int C) override {
    bind();
    float* scratch = scratch_.get_as<float>(column_sum_chunked_scratch_floats(R, C));
    cuda::column_sum_accumulate_chunked(dst, src, R, C, scratch, stream_);
  }
  void pool_tokens_forward(float* pooled, const float* x, int S, int T, int D, bool mean) override {
    bind();
    cuda::pool_tokens_forward(pooled, x, S, T, D, mean, stream_);
  }
  void pool_tokens_backward(float* dx, const float* dpooled, int S, int T, int D, bool mean) override {
    bind();
    cuda::pool_tokens_backward(dx, dpooled, S, T, D, mean, stream_);
  }
  void residual_scaled_forward(float* out, const float* res, const float* branch, const float* keep, int S,
                               size_t n) override {
    bind();
    cuda::residual_scaled_forward(out, res, branch, keep, S, n, stream_);
  }
  void scale_rows(float* out, const float* inp, const float* keep, int S, size_t n) override {
    bind();
    cuda::scale_rows(out, inp, keep, S, n, stream_);
  }
  void cross_entropy_forward_backward(double* loss, float* dlogits, const float* logits, const float* targets,
                                      int B, int C) override {
    bind();
    double* scratch = scratch_.get_as<double>(cross_entropy_scratch_doubles(B));
    if (step_sync_ == StepSync::kOnce) {
      cuda::cross_entropy_forward_backward_into(loss, dlogits, logits, targets, B, C, scratch, stream_);
      return;
    }
    const double value = cuda::cross_entropy_forward_backward(dlogits, logits, targets, B, C, scratch, stream_);
    upload(loss, &value, sizeof(value));
  }

  void grad_norm_squared(double* norm_sq, const float* grads, const ParamSegment* segments, int count) override {
    bind();
    const DeviceSegment* table = segments_.get(segments, count, stream_);
    double* scratch = scratch_.get_as<double>(std::max<size_t>((size_t)count * OptimTraits::kBlocksPerSegment, 1));
    cuda::grad_norm_squared(norm_sq, grads, table, count, scratch, stream_);
  }
  void scale(float* data, const ParamSegment* segments, int count, float factor) override {
    bind();
    cuda::scale(data, segments_.get(segments, count, stream_), count, factor, stream_);
  }
  void adamw(float* params, float* grads, float* exp_avg, float* exp_avg_sq, uint16_t* params_bf16,
             const ParamSegment* segments, int count, const AdamWScalars& s, const StepStatus* status, float clip_grad,
             bool check_loss) override {
    bind();
    const DeviceSegment* table = segments_.get(segments, count, stream_);
    bf16* copy = reinterpret_cast<bf16*>(params_bf16);  // written by the update itself (null: none kept)
    if (step_sync_ == StepSync::kOnce) {
      StepDecision* decision = decision_.get_as<StepDecision>(1);
      cuda::adamw_decided(params, grads, exp_avg, exp_avg_sq, copy, table, count, s, status, clip_grad, check_loss,
                          decision, stream_);
      return;
    }
    StepStatus host;
    download(&host, status, sizeof(host));  // the verified flow: decide on the host
    const StepDecision d = decide_step(host, clip_grad, check_loss);
    if (!d.update) return;
    if (d.clip) cuda::scale(grads, table, count, d.factor, stream_);
    cuda::adamw(params, grads, exp_avg, exp_avg_sq, copy, table, count, s, stream_);
  }

  CudaPlacement placement() const { return {device_, stream_}; }

 private:
  // Node may call in from different libuv threads: the current device is per host thread.
  void bind() { EMAE_CUDA_CHECK(cudaSetDevice(device_)); }
  // Waits for everything enqueued; the staged inputs' transfers are done then (Staging's invariant).
  void synchronize() {
    EMAE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    staging_.retire();
  }

  // position_of (B, N) for this step's permutation (recomputed: a B·N-element kernel)
  const int32_t* positions(const int32_t* perm, const PartGeometry& g) {
    int32_t* out = positions_.get_as<int32_t>((size_t)g.batch * g.num_patches);
    inverse_permutation(out, perm, g.batch, g.num_patches, stream_);
    return out;
  }

  // the GEMM path (gemm_dispatch.cuh) and the bf16 operand copies its bf16 kernels read
  GemmRunner<Scratch> gemm_runner() { return {gemm_path_, sms_, gemm_operands_, stream_}; }

  // matmul_backward, with dinp ⊙ gelu'(gelu_inp) in the dinp GEMM's epilogue when gelu_inp is given
  void backward(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight, ActIn gelu_inp, int R,
                int K, int N, bool assign_dweight) {
    bind();
    // the weight-gradient kernels accumulate (split-K): assigning = zeroing first
    if (assign_dweight) EMAE_CUDA_CHECK(cudaMemsetAsync(dweight, 0, (size_t)N * K * sizeof(float), stream_));
    float* scratch = scratch_.get_as<float>(matmul_backward_scratch_floats(R, K, N));
    cuda::matmul_backward_with(gemm_runner(), dinp, dweight, dbias, dout, inp, weight, R, K, N, scratch, stream_,
                               gelu_inp);
  }

  int device_;
  DType activations_;  // Backend::activation_dtype and weight_dtype
  std::string name_;
  int sms_ = 0;
  GemmPath gemm_path_ = GemmPath::kMma;
  AttentionPath attention_path_ = AttentionPath::kSimt;  // attention_tc.cuh
  StepSync step_sync_ = StepSync::kHost;                // step_sync.cuh
  Scratch gemm_operands_;
  cudaStream_t stream_ = nullptr;
  Scratch scratch_, positions_;
  Scratch decision_;  // one StepDecision (EMAE_CUDA_STEP_SYNC=once)
  Staging staging_;   // a step's inputs (EMAE_CUDA_STEP_SYNC=once)
  SegmentTable segments_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device, DType activations) {
  return std::make_unique<CudaBackend>(device, activations);
}

std::string attention_path_setting() {
  try {
    return attention_path_name(select_attention_path());
  } catch (const std::exception& e) {
    return std::string("refused: ") + e.what();
  }
}

std::string step_sync_setting() {
  try {
    return step_sync_name(select_step_sync());
  } catch (const std::exception& e) {
    return std::string("refused: ") + e.what();
  }
}

std::string gemm_path_of_device(int device, DType activations) {
  try {
    EMAE_CUDA_CHECK(cudaSetDevice(device));
    return gemm_path_name(select_gemm_path(activations));
  } catch (const std::exception& e) {
    return std::string("refused: ") + e.what();
  }
}

CudaPlacement placement_of(Backend& backend) {
  if (ProfilingBackend* profiled = profiling_of(backend)) return placement_of(profiled->inner());  // EMAE_PROFILE=1
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  return cuda ? cuda->placement() : CudaPlacement{};
}

}  // namespace emae::cuda
