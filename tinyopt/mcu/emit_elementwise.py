"""C for the element-wise ops: ADD of two same-shape activations (TFLM's int8 ADD: both inputs rescaled to twice
the larger scale, summed, requantized to the output)."""

from __future__ import annotations

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.emitter import Emitter, require_int8
from tinyopt.mcu.graph import Op
from tinyopt.mcu.quant import activation_range, quantize_multiplier


def emit_add(em: Emitter, op: Op) -> None:
    a, b, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    require_int8(em, op, op.inputs[0], op.inputs[1], op.outputs[0])
    if a.shape != b.shape or a.data is not None or b.data is not None:
        raise NotApplicable("the MCU code generator handles ADD of two same-shape activations only")
    twice = 2 * max(float(a.scales[0]), float(b.scales[0]))
    am, ash = quantize_multiplier(float(a.scales[0]) / twice)
    bm, bsh = quantize_multiplier(float(b.scales[0]) / twice)
    om, osh = quantize_multiplier(twice / ((1 << 20) * float(out.scales[0])))
    act_min, act_max = activation_range(op.options.fusedActivationFunction, out.scale, out.zero_point)
    em.body.append(
        f"  to_add({em.ptr(op.inputs[0])}, {em.ptr(op.inputs[1])}, {a.size}, {-a.zero_point}, "
        f"{-b.zero_point}, {am}, {ash}, {bm}, {bsh}, {om}, {osh}, {out.zero_point}, {act_min}, "
        f"{act_max}, {em.ptr(op.outputs[0])});"
    )
