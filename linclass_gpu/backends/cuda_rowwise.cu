// CUDA kernels of the CuPy backend: the row-wise part of one SGD step and the fused parameter update.
//
// One training step on the CuPy backend is: gather the minibatch rows (and their sample weights); cuBLAS
// Z = X_b W; ONE launch of softmax_cross_entropy_rows (or, for K sigmoids, sigmoid_loss_elements) turning Z into dZ
// in place; db = Σ dZ; cuBLAS dW = Xᵀ dZ; sgd_update on W and on b. The row-wise kernel reads each logit once from
// global memory, keeps it in registers through max, exp, sum and loss, and writes dZ once: two passes over the (B, C)
// logits in one launch, where the array-generic version (rowwise.py, one CuPy kernel per operation: scale, bias,
// max, subtract, exp, sum, divide, mean …) makes about fourteen passes in as many launches.
//
// The arithmetic follows linclass_gpu/backends/rowwise.py step for step (same numbered steps); that NumPy code is the
// mirror the CPU tests check against the float64 oracle. Both take the squared error's σ' as e^{−|z|}/(1 + e^{−|z|})²,
// not σ(1 − σ), which rounds to 0 in float32 once z ≳ 17. Needs sm_60 or newer (atomicAdd on
// double); the tests build it for sm_80 and sm_90. Written for NVRTC (no #include), built by CuPy with
//   -DLINCLASS_REAL=float|double          the compute dtype (float32 for every input but float64)
//   -DLINCLASS_VALUES_PER_LANE=1|2|...|32 logits per lane: a warp holds a row of up to 32·VALUES_PER_LANE classes

typedef LINCLASS_REAL real_t;

#define WARP_SIZE 32
#define FULL_WARP 0xffffffffu
#define VALUES_PER_LANE LINCLASS_VALUES_PER_LANE
// The losses of sigmoid_loss_elements, chosen by its loss_kind argument (cupy_backend.SIGMOID_LOSS_KINDS).
#define BINARY_CROSS_ENTROPY 0
#define SQUARED_ERROR 1

// −inf for padded class columns: exp(−inf − m) = 0, so they add nothing to the row sum.
__device__ __forceinline__ real_t negative_infinity() { return (real_t)__int_as_float(0xff800000u); }

__device__ __forceinline__ real_t larger(real_t a, real_t b) { return a > b ? a : b; }

// Butterfly reductions: after log2(32) = 5 exchanges every lane holds the warp's result.
__device__ __forceinline__ real_t warp_max(real_t value) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        value = larger(value, __shfl_xor_sync(FULL_WARP, value, offset));
    return value;
}

__device__ __forceinline__ real_t warp_sum(real_t value) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        value += __shfl_xor_sync(FULL_WARP, value, offset);
    return value;
}

// Row r's sample weight w_r: its loss counts w_r times and its dZ is scaled by w_r. Without weights (nullptr) every
// w_r is 1, and multiplying by 1 is exact: the results are bitwise those of the unweighted formulas.
__device__ __forceinline__ real_t row_weight(const real_t* __restrict__ weights, int row) {
    return weights != nullptr ? weights[row] : (real_t)1;
}

// One warp per row. Lane l holds columns l, l + 32, l + 64, … of its row in registers.
extern "C" __global__ void softmax_cross_entropy_rows(
    real_t* __restrict__ logits,           // (B, C) C-contiguous: X_b W on entry, dZ = w·(P − Y)/B on exit
    const long long* __restrict__ targets, // (B,): flat index r·C + y_r of each row's target logit (rowwise.py)
    const real_t* __restrict__ weights,    // (B,) sample weights of the batch's rows, or nullptr for all 1
    const real_t* __restrict__ bias,       // (C,)
    double* __restrict__ loss_sum,         // (): Σ_r w_r · cross-entropy of row r is added here
    int n_rows, int n_classes, real_t x_scale, real_t inv_batch)
{
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    if (row >= n_rows) return;  // the whole warp leaves together: the shuffles below see all 32 lanes
    real_t* row_logits = logits + (long long)row * n_classes;
    const long long target_column = targets[row] - (long long)row * n_classes;
    const real_t weight = row_weight(weights, row);

    // 0. z = s·(X_b W) + b, read once; padded columns are −inf.
    real_t z[VALUES_PER_LANE];
    real_t lane_max = negative_infinity();
#pragma unroll
    for (int k = 0; k < VALUES_PER_LANE; ++k) {
        const int column = lane + k * WARP_SIZE;
        z[k] = column < n_classes ? x_scale * row_logits[column] + bias[column] : negative_infinity();
        lane_max = larger(lane_max, z[k]);
    }
    // 1. Subtract the row max m: logsumexp(z) = m + log Σ exp(z − m), and exp(z − m) <= 1 never overflows.
    const real_t row_max = warp_max(lane_max);
    real_t lane_sum = 0, lane_target = 0;
#pragma unroll
    for (int k = 0; k < VALUES_PER_LANE; ++k) {
        z[k] -= row_max;
        if (lane + k * WARP_SIZE == target_column) lane_target = z[k];
        z[k] = exp(z[k]);
        lane_sum += z[k];
    }
    const real_t row_sum = warp_sum(lane_sum);
    // 2. Cross-entropy: −log p_y = log Σ exp(z − m) − (z_y − m); exactly one lane holds z_y − m. Counted w times.
    const real_t shifted_target = warp_sum(lane_target);
    if (lane == 0) atomicAdd(loss_sum, (double)(weight * (log(row_sum) - shifted_target)));
    // 3. d(w·CE)/dz = w·(softmax(z) − onehot(y)), averaged over the B rows of the batch.
    const real_t row_scale = weight * inv_batch;
#pragma unroll
    for (int k = 0; k < VALUES_PER_LANE; ++k) {
        const int column = lane + k * WARP_SIZE;
        if (column < n_classes)
            row_logits[column] = (z[k] / row_sum - (column == target_column ? (real_t)1 : (real_t)0)) * row_scale;
    }
}

// K independent sigmoids per row (K = 1: binary logistic regression), one thread per logit of the (B, K) batch; the
// warp adds its logits' losses before a single atomic. Row r's K losses add up, each counted w_r times.
extern "C" __global__ void sigmoid_loss_elements(
    real_t* __restrict__ logits,         // (B, K) C-contiguous: X_b W on entry, dZ = w·∂loss/∂z / B on exit
    const real_t* __restrict__ targets,  // (B, K) C-contiguous, in {0, 1}
    const real_t* __restrict__ weights,  // (B,) sample weights of the batch's rows, or nullptr for all 1
    const real_t* __restrict__ bias,     // (K,)
    double* __restrict__ loss_sum,       // (): Σ_r w_r Σ_k loss(z_rk, y_rk) is added here
    int n_rows, int n_outputs, int loss_kind, real_t x_scale, real_t inv_batch)
{
    const long long element = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // r·K + k
    real_t loss = 0;  // logits past the batch stay in the warp (for the shuffles) and add 0
    if (element < (long long)n_rows * n_outputs) {
        const int row = (int)(element / n_outputs);
        const int column = (int)(element - (long long)row * n_outputs);
        const real_t weight = row_weight(weights, row);
        const real_t y = targets[element];
        // 0. z = s·(X_b W) + b.
        const real_t z = x_scale * logits[element] + bias[column];
        // 1. σ(z) = 1/(1 + e^{−|z|}) for z >= 0 and e^{−|z|}/(1 + e^{−|z|}) for z < 0: both forms stable, and
        //    e^{−|z|} in (0, 1] is the only exp taken (it never overflows).
        const real_t exp_neg_abs = exp(-fabs(z));
        const real_t one_plus_exp = 1 + exp_neg_abs;
        const real_t error = (z >= 0 ? (real_t)1 : exp_neg_abs) / one_plus_exp - y;  // σ(z) − y
        real_t gradient;
        if (loss_kind == SQUARED_ERROR) {
            // 2. (σ − y)², and d/dz = 2(σ − y)·σ' with σ' = σ(1 − σ) = e^{−|z|}/(1 + e^{−|z|})² for either sign of z
            //    (no 1 − σ, which loses every digit once σ rounds to 1).
            loss = error * error;
            gradient = 2 * error * (exp_neg_abs / (one_plus_exp * one_plus_exp));
        } else {
            // 2. BCE from logits, max(z, 0) − z·y + log1p(e^{−|z|}): log σ(z) is never formed, so no log(0) for |z|
            //    large; d/dz = σ − y.
            loss = larger(z, (real_t)0) - z * y + log1p(exp_neg_abs);
            gradient = error;
        }
        // 3. Row r counts w_r times; dZ is averaged over the B rows of the batch.
        loss *= weight;
        logits[element] = gradient * (weight * inv_batch);
    }
    loss = warp_sum(loss);
    if (threadIdx.x % WARP_SIZE == 0) atomicAdd(loss_sum, (double)loss);
}

// The whole update of one parameter array in one pass, g = grad + l2·p (d/dp of l2/2·‖p‖² is l2·p), then by optimizer
//   0 SGD:     v ← μ v + g;  p ← p − lr·(g + μ v if nesterov else v);  step size s = lr
//   1 AdaGrad: G ← G + g²;  s = lr/(√G + ε) per value;  p ← p − s·g               (G in accumulator)
//   2 Adam:    m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  s = lr/(√v/√(1 − β₂ᵗ) + ε);  p ← p − s·m/(1 − β₁ᵗ)
//              (m in velocity, v in accumulator; the bias corrections come from the host, which knows t)
// then, with l1 > 0, the proximal step of s·l1·‖p‖₁ (soft-thresholding): p ← sign(p)·max(|p| − s·l1, 0), written
// as three exact cases (p − t, p + t or 0) so no copysign is needed. Proximal, not l1·sign(p) added to g: a weight
// that should be 0 lands on exactly 0 instead of oscillating around it. l1 = 0 skips it (the bias passes 0).
// Plain SGD and AdaGrad pass velocity = grad (μ = 0 makes v = g), hence no __restrict__ on those two.
extern "C" __global__ void sgd_update(
    real_t* __restrict__ param, const real_t* grad, real_t* velocity,
    real_t* __restrict__ accumulator,  // AdaGrad's Σ g² or Adam's v; nullptr for SGD
    int n_values, real_t learning_rate, real_t l2, real_t l1, real_t momentum, int nesterov, int optimizer,
    real_t eps, real_t beta1, real_t beta2, real_t bias_correction1, real_t bias_correction2_sqrt)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_values) return;
    const real_t g = grad[i] + l2 * param[i];
    real_t p, step_size;
    if (optimizer == 1) {
        const real_t sum_of_squares = accumulator[i] + g * g;
        accumulator[i] = sum_of_squares;
        step_size = learning_rate / (sqrt(sum_of_squares) + eps);
        p = param[i] - step_size * g;
    } else if (optimizer == 2) {
        const real_t m = beta1 * velocity[i] + (1 - beta1) * g;
        const real_t v = beta2 * accumulator[i] + (1 - beta2) * (g * g);
        velocity[i] = m;
        accumulator[i] = v;
        step_size = learning_rate / (sqrt(v) / bias_correction2_sqrt + eps);
        p = param[i] - (m / bias_correction1) * step_size;
    } else {
        const real_t v = momentum * velocity[i] + g;
        velocity[i] = v;
        step_size = learning_rate;
        p = param[i] - learning_rate * (nesterov ? g + momentum * v : v);
    }
    if (l1 > 0) {
        const real_t threshold = step_size * l1;
        p = p > threshold ? p - threshold : (p < -threshold ? p + threshold : (real_t)0);
    }
    param[i] = p;
}
