"""LIIF's fast query as one Triton kernel: gather, first-layer terms, ReLU, the MLP and the ensemble blend.

The torch fast path (``LIIF.fast_query``) computes the neighbours' table rows, their coordinate and cell terms
and the blend weights (so ties are broken exactly as there); this kernel does the rest, a block of queries with
all their ensemble members at a time. Unfused it stops after the first layer's ReLU and writes that activation
(members x queries, width) for torch's GEMMs. Fused, it runs the hidden layers on a per-program pair of scratch
tiles (ping-pong, in the GEMM dtype), so the activations stay in cache instead of going through memory once per
layer, then the output layer and the blend; programs loop over the blocks (a persistent grid), so the scratch
stays small. Index maths, terms, accumulations, the output and the blend are fp32; the GEMMs' inputs are in the
table's dtype (bf16/fp16 under autocast).

The module imports triton: import it only when a Triton kernel is asked for. Kernels are built on first use,
compiled for CUDA tensors and interpreted for CPU tensors (TRITON_INTERPRET=1, the CPU tests).
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Iterator

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.compiler.errors import CompilationError
from triton.runtime.errors import OutOfResources

from liif.errors import LiifError, one_line, option

# Untuned starting points, to be tuned on a card: rows (members x queries) per block, which is how many rows
# share each weight tile loaded; scratch programs per SM; warps; the GEMMs' reduction tile (up to the width).
BLOCK_ROWS = 128
PROGRAMS_PER_SM = 2
NUM_WARPS = 4
BLOCK_K = 64
# In the interpreter: small blocks and few programs, so that tests cover partial blocks and the persistent loop.
INTERPRETED_BLOCK_ROWS = 64
INTERPRETED_PROGRAMS = 3
MAX_OUT = 16  # the output layer's width is padded to this (tl.dot's smallest tile)
TABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Calls of each entry point so far, so that tests and benchmarks can tell a kernel ran from a fall-back to torch.
LAUNCHES = {"first_layer": 0, "fused_query": 0}
# What building the kernel for a card may raise: its code does not lower, it needs more shared memory or registers
# than the card has, or ptxas fails (a class of its own since Triton 3.3)
BUILD_ERRORS = (CompilationError, OutOfResources, *filter(None, [getattr(triton.runtime.errors, "PTXASError", None)]))


def query_kernel(table_ptr, rows_ptr, terms_ptr, extra_weight_ptr, blend_ptr, hidden_weight_ptr, hidden_bias_ptr,
                 out_weight_ptr, out_bias_ptr, out_ptr, scratch_ptr, n_queries, n_hidden,
                 MEMBERS: tl.constexpr, TERMS: tl.constexpr, WIDTH: tl.constexpr, OUT_DIM: tl.constexpr,
                 BLOCK_Q: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
                 OUT_BLOCK: tl.constexpr, FUSED: tl.constexpr, PRECISION: tl.constexpr):
    """Items are member-major: item = member * n_queries + query. A block is BLOCK_Q queries, all their members
    at once: tile row r (of ROWS = MEMBERS * BLOCK_Q) is member r // BLOCK_Q of query r % BLOCK_Q. Unfused,
    ``out`` is (items, WIDTH), the first layer's activation; fused, ``out`` is (n_queries, OUT_DIM), the blended
    prediction.

    Only builtins of triton.language here (tl.full, not tl.zeros; integer maths, not tl.cdiv): its jit-written
    helpers were built when triton was imported, and the interpreter cannot call them unless TRITON_INTERPRET
    was set by then."""
    program = tl.program_id(0)
    row_offsets = tl.arange(0, ROWS)
    query_offsets = tl.arange(0, BLOCK_Q)
    col_offsets = tl.arange(0, BLOCK_D)
    out_offsets = tl.arange(0, OUT_BLOCK)
    out_valid = out_offsets < OUT_DIM
    buffers = scratch_ptr + program * (2 * ROWS * WIDTH)
    k_offsets = tl.arange(0, BLOCK_K)
    tile = row_offsets[:, None] * WIDTH + col_offsets[None, :]
    k_tile = row_offsets[:, None] * WIDTH + k_offsets[None, :]
    for block in range(program, (n_queries + BLOCK_Q - 1) // BLOCK_Q, tl.num_programs(0)):
        queries = block * BLOCK_Q + row_offsets % BLOCK_Q
        valid = queries < n_queries
        items = ((row_offsets // BLOCK_Q) * n_queries + queries).to(tl.int64)  # items * WIDTH may pass 2**31
        rows = tl.load(rows_ptr + items, mask=valid, other=0)
        # First layer: the latent's row of pre-activations plus each coordinate/cell term times its column.
        for start in range(0, WIDTH, BLOCK_D):
            cols = start + col_offsets
            inside = valid[:, None] & (cols < WIDTH)[None, :]
            hidden = tl.load(table_ptr + rows[:, None] * WIDTH + cols[None, :], mask=inside, other=0.0).to(tl.float32)
            for term in tl.static_range(TERMS):
                value = tl.load(terms_ptr + items * TERMS + term, mask=valid, other=0.0)
                weight = tl.load(extra_weight_ptr + cols * TERMS + term, mask=cols < WIDTH, other=0.0)
                hidden += value[:, None] * weight[None, :]
            hidden = tl.maximum(hidden, 0.0)
            if FUSED:
                tl.store(buffers + start + tile, hidden.to(scratch_ptr.dtype.element_ty))
            else:
                tl.store(out_ptr + items[:, None] * WIDTH + cols[None, :], hidden.to(out_ptr.dtype.element_ty),
                         mask=inside)
        if FUSED:
            tl.debug_barrier()  # the block's first activation is written before any thread reads it
            for layer in range(n_hidden):
                source = buffers + (layer % 2) * (ROWS * WIDTH)
                target = buffers + ((layer + 1) % 2) * (ROWS * WIDTH)
                weights = hidden_weight_ptr + layer * (WIDTH * WIDTH)
                for start in range(0, WIDTH, BLOCK_D):
                    acc = tl.full((ROWS, BLOCK_D), 0.0, tl.float32)
                    for inner in range(0, WIDTH, BLOCK_K):
                        activation = tl.load(source + inner + k_tile)
                        # W is (out, in), row-major: load its (out, in) tile, multiply by the transpose
                        weight = tl.load(weights + (start + col_offsets)[:, None] * WIDTH
                                         + (inner + k_offsets)[None, :])
                        acc = tl.dot(activation, tl.trans(weight), acc, input_precision=PRECISION)
                    acc += tl.load(hidden_bias_ptr + layer * WIDTH + start + col_offsets)[None, :]
                    tl.store(target + start + tile, tl.maximum(acc, 0.0).to(scratch_ptr.dtype.element_ty))
                tl.debug_barrier()
            # Output layer and blend, member by member (fp32 from here on).
            source = buffers + (n_hidden % 2) * (ROWS * WIDTH)
            block_queries = block * BLOCK_Q + query_offsets
            block_valid = block_queries < n_queries
            blended = tl.full((BLOCK_Q, OUT_BLOCK), 0.0, tl.float32)
            for member in range(MEMBERS):
                pred = tl.full((BLOCK_Q, OUT_BLOCK), 0.0, tl.float32)
                for inner in range(0, WIDTH, BLOCK_K):
                    activation = tl.load(source + (member * BLOCK_Q + query_offsets)[:, None] * WIDTH
                                         + (inner + k_offsets)[None, :])
                    weight = tl.load(out_weight_ptr + out_offsets[:, None] * WIDTH + (inner + k_offsets)[None, :],
                                     mask=out_valid[:, None], other=0.0)
                    pred = tl.dot(activation, tl.trans(weight), pred, input_precision=PRECISION)
                pred += tl.load(out_bias_ptr + out_offsets, mask=out_valid, other=0.0)[None, :]
                share = tl.load(blend_ptr + member * n_queries + block_queries, mask=block_valid, other=0.0)
                blended += pred * share[:, None]
            tl.store(out_ptr + block_queries[:, None] * OUT_DIM + out_offsets[None, :], blended,
                     mask=block_valid[:, None] & out_valid[None, :])
            tl.debug_barrier()  # every thread is done with the scratch before the next block writes it


@lru_cache(maxsize=2)
def built_kernel(interpreted: bool) -> triton.runtime.JITFunction:
    """The kernel, JIT-compiled or interpreted: built on first use, whatever TRITON_INTERPRET was at import."""
    with triton.knobs.runtime.scope():
        triton.knobs.runtime.interpret = interpreted
        return triton.jit(query_kernel)


def runs_on(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: CUDA, or the CPU in Triton's interpreter."""
    from liif.kernels import interpreting

    return device.type == "cuda" or (device.type == "cpu" and interpreting())


def first_layer_supported(table: torch.Tensor, terms: torch.Tensor) -> bool:
    """Whether ``first_layer`` serves these inputs: inference (no gradients), fp32 terms, a float table, 1, 2 or 4
    members (a block's rows are a power of two)."""
    return (not torch.is_grad_enabled() and table.dtype in TABLE_DTYPES and terms.dtype == torch.float32
            and terms.shape[0] in (1, 2, 4) and runs_on(table.device))


def fused_supported(table: torch.Tensor, terms: torch.Tensor, linears: list[nn.Linear]) -> bool:
    """Whether ``fused_query`` serves these inputs: as ``first_layer``, plus hidden layers all of one width, a
    multiple of 16 (tl.dot's tiles), and at most 16 outputs."""
    width = linears[0].out_features
    # Triton's interpreter does not support a bf16 tl.dot (it multiplies the raw bits, triton-lang/triton#11584):
    # no fused bf16 on the CPU.
    interpreted_bf16 = table.device.type != "cuda" and table.dtype == torch.bfloat16
    return (first_layer_supported(table, terms) and width % 16 == 0 and not interpreted_bf16
            and all(linear.out_features == width for linear in linears[:-1])
            and linears[-1].out_features <= MAX_OUT)


def launch(table: torch.Tensor, rows: torch.Tensor, terms: torch.Tensor, extra_weight: torch.Tensor,
           blend: torch.Tensor | None, linears: list[nn.Linear], out: torch.Tensor) -> torch.Tensor:
    """Run the kernel, fused when ``blend`` is given; ``out`` is what it writes."""
    device = table.device
    fused = blend is not None
    members, n_queries, n_terms = terms.shape
    width = table.shape[1]
    interpreted = device.type != "cuda"
    block_q = (INTERPRETED_BLOCK_ROWS if interpreted else BLOCK_ROWS) // members
    blocks = triton.cdiv(n_queries, block_q)
    table = table.contiguous()
    rows = rows.contiguous()
    terms = terms.contiguous()
    extra_weight = extra_weight.float().contiguous()
    if fused:
        block_d = next(b for b in (64, 32, 16) if width % b == 0)
        block_k = next(b for b in (BLOCK_K, 64, 32, 16) if b <= BLOCK_K and width % b == 0)
        if interpreted:
            programs = min(blocks, INTERPRETED_PROGRAMS)
        else:
            programs = min(blocks, torch.cuda.get_device_properties(device).multi_processor_count * PROGRAMS_PER_SM)
        hidden = linears[1:-1]
        gemm_dtype = table.dtype
        if hidden:
            hidden_weight = torch.stack([linear.weight for linear in hidden]).to(gemm_dtype).contiguous()
            hidden_bias = torch.stack([linear.bias for linear in hidden]).float().contiguous()
        else:  # pointers the kernel never reads
            hidden_weight = hidden_bias = table
        out_weight = linears[-1].weight.to(gemm_dtype).contiguous()
        out_bias = linears[-1].bias.float().contiguous()
        scratch = torch.empty(programs, 2, members * block_q, width, dtype=gemm_dtype, device=device)
        # fp32 GEMMs follow torch's TF32 switch; bf16/fp16 ones take Triton's default (the setting is for fp32)
        ieee = gemm_dtype == torch.float32 and (interpreted or not torch.backends.cuda.matmul.allow_tf32)
        precision = "ieee" if ieee else "tf32"
        blend = blend.float().contiguous()
        n_hidden = len(hidden)
        out_dim = linears[-1].out_features
    else:
        block_d = block_k = min(64, max(16, triton.next_power_of_2(width)))
        programs = blocks
        blend = hidden_weight = hidden_bias = out_weight = out_bias = scratch = table
        precision, n_hidden, out_dim = "ieee", 0, 1
    # Triton launches on the current CUDA device: make it the tensors' one (cuda:1 under torchrun, say).
    with contextlib.nullcontext() if interpreted else torch.cuda.device(device), built_on(device):
        built_kernel(interpreted)[(programs,)](
            table, rows, terms, extra_weight, blend, hidden_weight, hidden_bias, out_weight, out_bias, out, scratch,
            n_queries, n_hidden, MEMBERS=members, TERMS=n_terms, WIDTH=width, OUT_DIM=out_dim, BLOCK_Q=block_q,
            ROWS=members * block_q, BLOCK_D=block_d, BLOCK_K=block_k, OUT_BLOCK=MAX_OUT, FUSED=fused,
            PRECISION=precision, **({} if interpreted else {"num_warps": NUM_WARPS}))
    return out


@contextlib.contextmanager
def built_on(device: torch.device) -> Iterator[None]:
    """Turn a failure to build the kernel for ``device``'s card into one line that names the way out."""
    try:
        yield
    except BUILD_ERRORS as exc:
        card = torch.cuda.get_device_name(device) if device.type == "cuda" else "the interpreter"
        raise LiifError(f"the Triton query kernel does not build for {card} ({one_line(exc)}); "
                        f"use {option('kernel', 'torch')}") from None


def first_layer(table: torch.Tensor, rows: torch.Tensor, terms: torch.Tensor,
                extra_weight: torch.Tensor) -> torch.Tensor:
    """ReLU(table[rows] + terms @ extra_weight^T): the first hidden activation (members * queries, width) in the
    table's dtype, from ``rows`` (members * queries,), ``terms`` (members, queries, T) and ``extra_weight``
    (width, T), the first layer's last T columns."""
    LAUNCHES["first_layer"] += 1
    out = torch.empty(rows.shape[0], table.shape[1], dtype=table.dtype, device=table.device)
    return launch(table, rows, terms, extra_weight, None, [], out)


def fused_query(table: torch.Tensor, rows: torch.Tensor, terms: torch.Tensor, extra_weight: torch.Tensor,
                blend: torch.Tensor, linears: list[nn.Linear]) -> torch.Tensor:
    """The blended prediction (queries, out_dim) in fp32: ``first_layer``, then ``linears[1:]`` with ReLU between,
    per member, weighted by ``blend`` (members, queries) and summed over members."""
    LAUNCHES["fused_query"] += 1
    out = torch.empty(terms.shape[1], linears[-1].out_features, dtype=torch.float32, device=table.device)
    return launch(table, rows, terms, extra_weight, blend, linears, out)
