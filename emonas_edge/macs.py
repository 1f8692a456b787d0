"""Counting multiply-accumulates, from a PyTorch module or from an ONNX graph.

Both count the same things (convolutions, matrix products, linear layers; not elementwise
ops, pooling or normalisation), so a genotype, its checkpoint and its exported ONNX report the
same figure; the test suite holds them to that. PyTorch loads only for the first (the ONNX count
serves runtime-only installs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    from torch import nn


def macs_torch(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one batch-1 forward pass (eval mode, so training-only heads are skipped)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


def _dims(vi) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        else:
            return None
    return out


def macs_onnx(model: onnx.ModelProto) -> int:
    """MACs of a batch-1 run, from shapes inferred on the graph (Conv, ConvTranspose, MatMul, Gemm)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = 1
    # Drop stale shapes recorded for a symbolic batch; inference recomputes them at batch 1.
    del m.graph.value_info[:]
    for out in m.graph.output:
        out.type.tensor_type.ClearField("shape")
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes: dict[str, list[int] | None] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        shapes[vi.name] = _dims(vi)
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)

    total = 0
    for node in m.graph.node:
        op = node.op_type
        if op in ("Conv", "ConvTranspose", "QLinearConv"):
            w = shapes.get(node.input[3 if op == "QLinearConv" else 1])
            y = shapes.get(node.output[0])
            if not w or not y:
                continue
            # weight: [M, C/group, kH, kW] -> each output element costs C/group * kH * kW
            if op == "ConvTranspose":
                total += int(np.prod(shapes.get(node.input[0]) or [0])) * int(np.prod(w[1:]))
            else:
                total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a = shapes.get(node.input[0])
            y = shapes.get(node.output[0])
            if a and y:
                total += int(np.prod(y)) * a[-1]
        elif op == "Gemm":
            a = shapes.get(node.input[0])
            b = shapes.get(node.input[1])
            y = shapes.get(node.output[0])
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            if a and y:
                total += int(np.prod(y)) * (a[0] if trans_a else a[-1])
            elif b and len(b) == 2:
                # Shape inference can lose the rows after a Reshape fed by a symbolic batch; a Gemm
                # fed by the (batch-1) network is then one row: K x N multiply-accumulates.
                total += int(b[0] * b[1])
    return int(total)


def params_onnx(model: onnx.ModelProto) -> int:
    """Floating-point weight elements stored in the graph (after BN folding this is below the
    PyTorch count, which is why exported models also carry the PyTorch figure in metadata)."""
    float_types = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
    }
    return int(
        sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in float_types and len(i.dims) > 0)
    )
