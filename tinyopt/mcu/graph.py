"""Read an int8 .tflite into a small graph: tensors (shape, type, quantization, constant data) and ops.

The flatbuffer is parsed with the schema module that TensorFlow ships (no parser of our own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# At import, not in the function: the flow calls has_int8_tensors from its own thread while tasks import
# TensorFlow in theirs, and two threads importing TensorFlow at once can deadlock (_DeadlockError, seen in CI).
from tensorflow.lite.python import schema_py_generated as schema

from tinyopt.core.errors import NotApplicable

TENSOR_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    scales: np.ndarray  # float32, empty when not quantized
    zero_points: np.ndarray  # int64
    data: np.ndarray | None  # constant contents, already typed and shaped

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def scale(self) -> float:
        return float(self.scales[0])

    @property
    def zero_point(self) -> int:
        return int(self.zero_points[0]) if len(self.zero_points) else 0


@dataclass
class Op:
    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: object


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    op_names: list[str] = field(default_factory=list)


def _op_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def load_graph(blob: bytes) -> Graph:
    model = schema.ModelT.InitFromPackedBuf(bytearray(blob), 0)
    if len(model.subgraphs) != 1:
        raise NotApplicable(f"the MCU code generator handles one subgraph; this model has {len(model.subgraphs)}")
    names = _op_names()
    sub = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(sub.tensors):
        if t.type not in TENSOR_TYPES:
            raise NotApplicable(f"the MCU code generator does not handle tensor type {t.type} ({t.name!r})")
        dtype = TENSOR_TYPES[t.type]
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        q = t.quantization
        scales = np.asarray(q.scale if q is not None and q.scale is not None else [], dtype=np.float32)
        zps = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], dtype=np.int64)
        buf = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        data = None
        if buf is not None and len(buf):
            data = np.frombuffer(bytes(np.asarray(buf, dtype=np.uint8)), dtype=dtype).reshape(shape or (1,))
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        tensors.append(Tensor(i, name, shape, dtype, scales, zps, data))
    ops = []
    for i, op in enumerate(sub.operators):
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"op#{code.builtinCode}")
        ops.append(Op(i, kind, [int(x) for x in op.inputs], [int(x) for x in op.outputs], op.builtinOptions))
    return Graph(tensors, ops, [int(x) for x in sub.inputs], [int(x) for x in sub.outputs], [o.kind for o in ops])


def has_int8_tensors(path: str | Path) -> bool:
    """Whether a .tflite file has any int8 tensor: a float model has none, and is not compiled for a device."""
    try:
        graph = load_graph(Path(path).read_bytes())
    except NotApplicable:  # a tensor type the generator does not read (float16 weights): not an int8 model
        return False
    return any(tensor.dtype is np.int8 for tensor in graph.tensors)
