// Runs linclass_gpu/backends/cuda_rowwise.cu on the CPU, so its arithmetic and indexing are tested without a GPU.
//
// The kernel source is included unchanged after a few definitions that stand in for CUDA's. The 32 lanes of a warp
// are coroutines (ucontext) on one host thread: a shuffle writes the lane's value to a slot and yields; once every
// lane has written, each reads its partner's slot and yields again before anyone may overwrite it. A warp whose lanes
// disagree on whether to shuffle (undefined behaviour on a GPU) aborts the process with a message. Warps and blocks
// run one after another. Built by tests/test_cupy_backend.py with
//   g++ -std=c++20 -shared -fPIC -ffp-contract=off -DLINCLASS_REAL=... -DLINCLASS_VALUES_PER_LANE=...
//       -DKERNEL_SOURCE='"path/to/cuda_rowwise.cu"'
// and called through ctypes, one run_<kernel> function per kernel, grid and block first as in kernel<<<grid, block>>>.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <ucontext.h>
using std::exp; using std::fabs; using std::log; using std::log1p; using std::sqrt;
#define __global__
#define __device__
#define __forceinline__ inline
struct dim3 { unsigned x, y, z; };
static dim3 threadIdx, blockIdx, blockDim;

namespace warp {
constexpr unsigned SIZE = 32;
static ucontext_t scheduler, lanes[SIZE];
alignas(16) static char stacks[SIZE][1 << 16];
static bool finished[SIZE];
static unsigned running_lane;
static std::function<void()> body;  // the kernel with its arguments bound

static void yield() { swapcontext(&lanes[running_lane], &scheduler); }

static void lane_entry() {
    body();
    finished[running_lane] = true;  // then uc_link returns to the scheduler
}

// Run the warp `index` of the current block: every lane until all finish, a round of resumptions per yield.
static void run(unsigned index) {
    for (unsigned lane = 0; lane < SIZE; ++lane) {
        getcontext(&lanes[lane]);
        lanes[lane].uc_stack = {stacks[lane], 0, sizeof stacks[lane]};
        lanes[lane].uc_link = &scheduler;
        makecontext(&lanes[lane], lane_entry, 0);
        finished[lane] = false;
    }
    for (;;) {
        for (unsigned lane = 0; lane < SIZE; ++lane) {
            running_lane = lane;
            threadIdx = {index * SIZE + lane, 0, 0};
            swapcontext(&scheduler, &lanes[lane]);
        }
        unsigned n_finished = 0;
        for (bool done : finished) n_finished += done;
        if (n_finished == SIZE) return;
        if (n_finished != 0) {
            std::fprintf(stderr, "cuda_warp_emulator: block %u warp %u: %u lanes left while the others wait at a "
                         "shuffle\n", blockIdx.x, index, n_finished);
            std::abort();
        }
    }
}
}  // namespace warp

static float __int_as_float(unsigned bits) { float value; std::memcpy(&value, &bits, sizeof value); return value; }

template <typename T> static T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    static T slots[warp::SIZE];
    const unsigned lane = threadIdx.x % warp::SIZE;
    slots[lane] = value;
    warp::yield();  // every lane has written
    const T other = slots[lane ^ lane_mask];
    warp::yield();  // every lane has read
    return other;
}

static double atomicAdd(double* address, double value) {  // one host thread: no race to guard against
    const double old = *address;
    *address = old + value;
    return old;
}

#include KERNEL_SOURCE

// kernel<<<grid, block>>>(args...)
template <typename... Args>
static void launch(void (*kernel)(Args...), unsigned grid, unsigned block, std::type_identity_t<Args>... args) {
    blockDim = {block, 1, 1};
    warp::body = [=] { kernel(args...); };
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        for (unsigned index = 0; index < block / warp::SIZE; ++index) warp::run(index);
    }
}

extern "C" {
void run_softmax_cross_entropy_rows(unsigned grid, unsigned block, real_t* logits, const long long* targets,
                                    const real_t* weights, const real_t* bias, double* loss_sum, int n_rows,
                                    int n_classes, real_t x_scale, real_t inv_batch) {
    launch(softmax_cross_entropy_rows, grid, block, logits, targets, weights, bias, loss_sum, n_rows, n_classes,
           x_scale, inv_batch);
}
void run_sigmoid_loss_elements(unsigned grid, unsigned block, real_t* logits, const real_t* targets,
                               const real_t* weights, const real_t* bias, double* loss_sum, int n_rows, int n_outputs,
                               int loss_kind, real_t x_scale, real_t inv_batch) {
    launch(sigmoid_loss_elements, grid, block, logits, targets, weights, bias, loss_sum, n_rows, n_outputs, loss_kind,
           x_scale, inv_batch);
}
void run_sgd_update(unsigned grid, unsigned block, real_t* param, const real_t* grad, real_t* velocity,
                    real_t* accumulator, int n_values, real_t learning_rate, real_t l2, real_t l1, real_t momentum,
                    int nesterov, int optimizer, real_t eps, real_t beta1, real_t beta2, real_t bias_correction1,
                    real_t bias_correction2_sqrt) {
    launch(sgd_update, grid, block, param, grad, velocity, accumulator, n_values, learning_rate, l2, l1, momentum,
           nesterov, optimizer, eps, beta1, beta2, bias_correction1, bias_correction2_sqrt);
}
}
