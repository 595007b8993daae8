"""The compiled step's two products on AMX tiles, where the CPU has them and X holds integers of at most 8 bits.

An AMX tile multiply (``TDPBF16PS``, Intel Xeon from Sapphire Rapids on) adds the product of a 16 × 32 and a 32 × 16
bfloat16 matrix into a 16 × 16 float32 tile: 8,192 multiply-adds in one instruction, where an AVX-512 FMA does 16.
The FMA loops of :mod:`.cpu_products` run an MNIST step's products (B = 128, D = 784, C = 10) at the core's FMA
peak; the tiles take about a quarter of that time, and under half with the cutting of W and dZ into parts each step
(``linclass-gpu bench mnist`` gives the whole epoch).

Float32 from bfloat16 parts. A bfloat16 has 8 significant bits, so an integer of at most 8 bits (uint8 pixels, int8)
is one exactly. The float operand is cut by truncation into three bfloat16 parts, ``w = hi + mid + lo`` exactly
(8 + 8 + 8 significant bits make float32's 24): each partial product ``x·part`` is then exact in float32 and only the
tile's float32 sums round, as the FMA loops' do. The sums run in another order, so the results are not those of
:mod:`.cpu_products` bit for bit (the oracle's float32 tolerance holds for both). The tile unit reads a part below
float32's normal range as 0: an absolute error under 2⁻¹²⁶ per product.

Layouts (``B64``, ``D64``: the batch rows and the features rounded up to 64, zero-padded):

- logits ``Z = X W``: X's rows as bfloat16 (``x_bits``, (B64, D64) uint16) times W's parts in the tile unit's pair
  layout (``weight_parts``, (3, D64/2, 16) uint32: features 2d and 2d+1 of an output side by side), into ``Z16``
  (B64, 16) float32; four result tiles (64 rows) share each loaded W part;
- gradient ``Gᵀ = dZᵀ X``: dZᵀ's parts (``coefficient_parts``, (3, C', B64) uint16, C' the even count of outputs)
  times the rows in pair layout (``x_pairs``, (B64/2, D64) uint32: rows 2i and 2i+1 of a feature side by side), into
  Wᵀ's layout ((C', D64) float32); four result tiles (64 features) share each loaded dZ part.

Where the tiles run: :func:`amx_enabled`, on Linux x86-64 with AMX-BF16, once the kernel grants this process the tile
state (``arch_prctl``), and unless :data:`AMX_ENV` is ``0``. In a process the kernel has not granted that state the
first tile instruction faults: call the products only where :func:`amx_enabled` (which asks) is True. Where LLVM
cannot emit AMX (another CPU), the intrinsics compile to a trap, never reached: Numba's disk cache is kept per CPU
and feature set, so such a build never runs where the tiles are enabled.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

import numpy as np

from .cpu_loops import NUMBA_AVAILABLE, compiled, compiled_loops_enabled

# Set to "0" to keep the FMA loops where the tiles would run.
AMX_ENV = "LINCLASS_GPU_AMX"
# A tile: 16 rows of 64 bytes (32 bfloat16 or 16 float32 or 16 bfloat16 pairs).
TILE_ROWS, TILE_BYTES, TILE_PAIRS = 16, 64, 16
# The most outputs the products take: one result tile's 16 columns (logits) or rows (gradient).
AMX_MAX_OUTPUTS = 16
# The block the batch rows (logits) and the features (gradient) are padded to: four result tiles share each load.
BLOCK = 64
# The tile registers: four results (a block's 64 rows or features) and the operand loaded for each; the three parts
# are tiles 5, 6 and 7.
RESULT_TILES, OPERAND_TILE = (0, 1, 2, 3), 4
# The three bfloat16 parts of a float32, and the bits a truncation to bfloat16 keeps.
N_PARTS, BF16_BITS = 3, np.uint32(0xFFFF0000)
# Linux: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) asks for the tile data state (kernel 5.16 and later).
SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 158, 0x1023, 18


def _host_emits_amx() -> bool:
    """Whether LLVM, as Numba targets this CPU, has the AMX-BF16 instructions: the host's features, or those
    ``NUMBA_CPU_FEATURES`` names (a ``NUMBA_CPU_NAME`` without them targets a CPU with none)."""
    if not NUMBA_AVAILABLE:
        return False
    import llvmlite.binding
    from numba.core import config

    if config.CPU_FEATURES is not None:
        named = set(config.CPU_FEATURES.split(","))
        return {"+amx-tile", "+amx-bf16"} <= named
    if config.CPU_NAME not in (None, "host"):
        return False
    features = llvmlite.binding.get_host_cpu_features()
    return bool(features.get("amx-tile")) and bool(features.get("amx-bf16"))


HOST_EMITS_AMX = _host_emits_amx()


@functools.cache
def _tile_state_granted() -> bool:
    """Ask the kernel, once per process, for the tile data state; False where it refuses or is not Linux."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0


def amx_enabled() -> bool:
    """Whether the compiled step runs its products on tiles: the compiled loops on, AMX-BF16 on this CPU, the tile
    state granted, and :data:`AMX_ENV` not ``0``."""
    return (compiled_loops_enabled() and HOST_EMITS_AMX and os.environ.get(AMX_ENV, "1") != "0"
            and _tile_state_granted())


def exact_in_bfloat16(dtype) -> bool:
    """Whether every value of ``dtype`` is a bfloat16 exactly: integers of at most 8 bits (and booleans)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "uib" and dtype.itemsize == 1


@compiled(inline=True)
def padded(size):
    """``size`` rounded up to :data:`BLOCK`."""
    return -(-size // BLOCK) * BLOCK


def tile_configs(n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """The two tile configurations (``LDTILECFG``'s 64 bytes: palette 1, then each tile's bytes per row at 16 + 2t and
    rows at 48 + t) for ``n_outputs`` ≤ 16.

    Returns
    -------
    logits_config, gradient_config : ndarray of uint8, shape (64,)
        Logits: every tile 16 × 64 bytes. Gradient: the result tiles 0–3 and dZ's parts 5–7 have C' rows (the even
        count of outputs), X's tile 4 has 16.
    """
    configs = np.zeros((2, 64), dtype=np.uint8)
    configs[:, 0] = 1
    for config in configs:
        config[16:32].view(np.uint16)[:] = TILE_BYTES
        config[48:56] = TILE_ROWS
    configs[1, 48:52] = configs[1, 53:56] = n_outputs + n_outputs % 2
    return configs[0], configs[1]


if NUMBA_AVAILABLE:
    from llvmlite import ir
    from numba import literal_unroll, types
    from numba.extending import intrinsic

    _I8, _I64, _BYTE_POINTER = ir.IntType(8), ir.IntType(64), ir.IntType(8).as_pointer()

    def _call(builder, name: str, argument_types: list, arguments: list) -> None:
        """Call the void LLVM intrinsic ``name``, or trap where this CPU has no AMX (never reached then)."""
        module = builder.module
        if not HOST_EMITS_AMX:
            name, argument_types, arguments = "llvm.trap", [], []
        function = module.globals.get(name) or ir.Function(module, ir.FunctionType(ir.VoidType(), argument_types),
                                                           name)
        builder.call(function, arguments)

    def _tile_number(tile) -> int | None:
        return tile.literal_value if isinstance(tile, types.IntegerLiteral) else None

    def _address(context, builder, array_type, array, offset):
        """A byte pointer to element ``offset`` of a C-contiguous array."""
        data = context.make_array(array_type)(context, builder, array).data
        return builder.bitcast(builder.gep(data, [offset]), _BYTE_POINTER)

    @intrinsic
    def _load_config(typingctx, config):
        def codegen(context, builder, signature, arguments):
            _call(builder, "llvm.x86.ldtilecfg", [_BYTE_POINTER],
                  [_address(context, builder, signature.args[0], arguments[0], ir.Constant(_I64, 0))])
            return context.get_dummy_value()
        return types.void(config), codegen

    @intrinsic
    def _release(typingctx):
        def codegen(context, builder, signature, arguments):
            _call(builder, "llvm.x86.tilerelease", [], [])
            return context.get_dummy_value()
        return types.void(), codegen

    @intrinsic
    def _zero(typingctx, tile):
        number = _tile_number(tile)
        if number is None:
            return None

        def codegen(context, builder, signature, arguments):
            _call(builder, "llvm.x86.tilezero", [_I8], [ir.Constant(_I8, number)])
            return context.get_dummy_value()
        return types.void(tile), codegen

    def _memory_intrinsic(name: str):
        """``tile ⇄ array[offset:]``, rows ``stride`` bytes apart: LLVM's ``name`` (tileloadd64 or tilestored64)."""
        @intrinsic
        def move(typingctx, tile, array, offset, stride):
            number = _tile_number(tile)
            if number is None:
                return None

            def codegen(context, builder, signature, arguments):
                _call(builder, name, [_I8, _BYTE_POINTER, _I64],
                      [ir.Constant(_I8, number), _address(context, builder, signature.args[1], arguments[1],
                                                          arguments[2]), arguments[3]])
                return context.get_dummy_value()
            return types.void(tile, array, types.int64, types.int64), codegen
        return move

    _load, _store = _memory_intrinsic("llvm.x86.tileloadd64"), _memory_intrinsic("llvm.x86.tilestored64")

    @intrinsic
    def _multiply_add(typingctx, result, left, right):
        numbers = [_tile_number(tile) for tile in (result, left, right)]
        if None in numbers:
            return None

        def codegen(context, builder, signature, arguments):
            _call(builder, "llvm.x86.tdpbf16ps", [_I8] * 3, [ir.Constant(_I8, number) for number in numbers])
            return context.get_dummy_value()
        return types.void(result, left, right), codegen

    @intrinsic
    def float32_bits(typingctx, value):
        """The bits of a float32, as uint32."""
        if value != types.float32:
            return None

        def codegen(context, builder, signature, arguments):
            return builder.bitcast(arguments[0], ir.IntType(32))
        return types.uint32(value), codegen

    @intrinsic
    def bits_float32(typingctx, bits):
        """The float32 whose bits are the low 32 of ``bits`` (Numba widens uint32 arithmetic to 64 bits)."""
        if not isinstance(bits, types.Integer):
            return None

        def codegen(context, builder, signature, arguments):
            value = arguments[0]
            if bits.bitwidth != 32:
                value = builder.trunc(value, ir.IntType(32)) if bits.bitwidth > 32 else builder.zext(value,
                                                                                                   ir.IntType(32))
            return builder.bitcast(value, ir.FloatType())
        return types.float32(bits), codegen


@compiled(inline=True)
def bfloat16_parts(value):
    """``value`` (float32) as three bfloat16 codes (uint32 holding 16 bits) whose values sum to it exactly: each part
    is the truncation of what the parts before it leave (for a NaN or inf, NaN or inf parts). A float64 is rounded
    to float32 first: the compiled step types its tile branch for float64 too, and never runs it there."""
    value = np.float32(value)
    high = float32_bits(value) & BF16_BITS
    rest = value - bits_float32(high)  # exact: the low 16 bits of value's significand
    middle = float32_bits(rest) & BF16_BITS
    low = float32_bits(rest - bits_float32(middle)) & BF16_BITS  # exact, and at most 8 significant bits
    return high >> np.uint32(16), middle >> np.uint32(16), low >> np.uint32(16)


@compiled(inline=True)
def gather_rows_(X, rows, n_rows, x_bits, x_pairs):
    """The batch's rows ``X[rows[:n_rows]]`` (integers of at most 8 bits) as bfloat16 into ``x_bits`` (B64, D64)
    uint16 and, rows 2i and 2i + 1 side by side, ``x_pairs`` (B64/2, D64) uint32; an odd batch's last pair is
    completed with zeros. Rows and features past the batch's are left as they are (the padding's zeros, or an
    earlier batch's rows, which meet only zero coefficients)."""
    for i in range(0, n_rows - 1, 2):
        _gather_pair_(X[rows[i]], X[rows[i + 1]], x_bits[i], x_bits[i + 1], x_pairs[i // 2])
    if n_rows % 2:
        _gather_pair_(X[rows[n_rows - 1]], np.zeros(X.shape[1], dtype=X.dtype), x_bits[n_rows - 1], x_bits[n_rows],
                      x_pairs[n_rows // 2])


@compiled(inline=True)
def _gather_pair_(first, second, first_bits, second_bits, pairs):
    """Two rows as bfloat16 codes, each into its own row and both side by side into ``pairs``."""
    for j in range(first.shape[0]):
        low = float32_bits(np.float32(first[j])) >> np.uint32(16)  # exact: the low 16 bits are 0
        high = float32_bits(np.float32(second[j])) >> np.uint32(16)
        first_bits[j] = low
        second_bits[j] = high
        pairs[j] = low | (high << np.uint32(16))


@compiled
def pack_weight_parts_(weights_t, n_outputs, codes, weight_parts):
    """W's three bfloat16 parts in the pair layout: ``weight_parts[p, d, c]`` holds part p of ``Wᵀ[c, 2d]`` (low 16
    bits) and ``Wᵀ[c, 2d + 1]`` (high 16 bits), for c < ``n_outputs``.

    ``weights_t`` (C', D64) float32; ``codes`` (3, C', D64) uint16 scratch: the parts are cut along each row (a
    vectorised pass), then each part's uint32 pairs are transposed, which costs more than the cut.
    """
    n_features = weights_t.shape[1]
    for output in range(n_outputs):
        row = weights_t[output]
        high, middle, low = codes[0, output], codes[1, output], codes[2, output]
        for j in range(n_features):
            high[j], middle[j], low[j] = bfloat16_parts(row[j])
    pairs = codes.reshape(-1).view(np.uint32).reshape(N_PARTS, codes.shape[1], n_features // 2)
    for part in range(N_PARTS):
        target = weight_parts[part]
        for pair in range(n_features // 2):
            for output in range(n_outputs):
                target[pair, output] = pairs[part, output, pair]


@compiled
def pack_coefficient_parts_(dZ, coefficient_parts):
    """dZᵀ's three bfloat16 parts: ``coefficient_parts[p, c, i]`` is part p of ``dZ[i, c]`` for the batch's rows, 0 for
    the padding rows past them; ``dZ`` (n, C) float32, ``coefficient_parts`` (3, C', B64) uint16."""
    n_rows, n_outputs = dZ.shape
    for output in range(n_outputs):
        for row in range(n_rows):
            high, middle, low = bfloat16_parts(dZ[row, output])
            coefficient_parts[0, output, row] = high
            coefficient_parts[1, output, row] = middle
            coefficient_parts[2, output, row] = low
        coefficient_parts[:, output, n_rows:] = 0


@compiled(inline=True)
def _load_parts(flat, offset, part_size, stride):
    """The three parts' tiles (5, 6, 7) from ``flat[offset + p·part_size:]``, rows ``stride`` bytes apart (tile
    numbers are immediates: one statement per tile)."""
    _load(5, flat, offset, stride)
    _load(6, flat, offset + part_size, stride)
    _load(7, flat, offset + 2 * part_size, stride)


@compiled(inline=True)
def _operand_times_parts(result):
    """Result tile += the operand tile (X's rows) times each part's tile (W's)."""
    _multiply_add(result, OPERAND_TILE, 5)
    _multiply_add(result, OPERAND_TILE, 6)
    _multiply_add(result, OPERAND_TILE, 7)


@compiled(inline=True)
def _parts_times_operand(result):
    """Result tile += each part's tile (dZᵀ's) times the operand tile (X's rows in pairs)."""
    _multiply_add(result, 5, OPERAND_TILE)
    _multiply_add(result, 6, OPERAND_TILE)
    _multiply_add(result, 7, OPERAND_TILE)


@compiled
def logits_product_amx_(x_bits, weight_parts, Z16, config):
    """``Z16 = X W`` for the B64 rows of ``x_bits`` (B64, D64) uint16, from ``weight_parts`` (3, D64/2, 16) uint32;
    ``Z16`` (B64, 16) float32; ``config``: :func:`tile_configs`' first."""
    n_rows, n_features = x_bits.shape
    x_flat, parts_flat, z_flat = x_bits.reshape(-1), weight_parts.reshape(-1), Z16.reshape(-1)
    x_stride, part_size = 2 * n_features, weight_parts.shape[1] * TILE_PAIRS
    _load_config(config)
    for first in range(0, n_rows, BLOCK):
        for result in literal_unroll(RESULT_TILES):
            _zero(result)
        for k in range(0, n_features, 2 * TILE_PAIRS):
            _load_parts(parts_flat, (k // 2) * TILE_PAIRS, part_size, TILE_BYTES)  # W's pair rows k/2 .. k/2 + 15
            for result in literal_unroll(RESULT_TILES):  # rows first + 16·result .. + 15
                _load(OPERAND_TILE, x_flat, (first + TILE_ROWS * result) * n_features + k, x_stride)
                _operand_times_parts(result)
        for result in literal_unroll(RESULT_TILES):
            _store(result, z_flat, (first + TILE_ROWS * result) * TILE_PAIRS, TILE_BYTES)
    _release()


@compiled
def weight_gradient_product_amx_(coefficient_parts, x_pairs, gradient_t, config):
    """``Gᵀ = dZᵀ X`` into ``gradient_t`` (C', D64) float32 from ``coefficient_parts`` (3, C', B64) uint16 and
    ``x_pairs`` (B64/2, D64) uint32; ``config``: :func:`tile_configs`' second."""
    n_batch = coefficient_parts.shape[2]
    n_features = x_pairs.shape[1]
    parts_flat, x_flat, gradient_flat = coefficient_parts.reshape(-1), x_pairs.reshape(-1), gradient_t.reshape(-1)
    part_size, x_stride = coefficient_parts.shape[1] * n_batch, 4 * n_features
    _load_config(config)
    for first in range(0, n_features, BLOCK):
        for result in literal_unroll(RESULT_TILES):
            _zero(result)
        for k in range(0, n_batch, 2 * TILE_PAIRS):
            _load_parts(parts_flat, k, part_size, 2 * n_batch)  # dZ's rows k .. k + 31
            for result in literal_unroll(RESULT_TILES):  # features first + 16·result .. + 15 of rows k .. k + 31
                _load(OPERAND_TILE, x_flat, (k // 2) * n_features + first + TILE_PAIRS * result, x_stride)
                _parts_times_operand(result)
        for result in literal_unroll(RESULT_TILES):
            _store(result, gradient_flat, first + TILE_PAIRS * result, x_stride)
    _release()
