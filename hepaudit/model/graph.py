"""Reading an ONNX graph: safe loading, introspection, the score head, hidden tensors.

Nothing here runs the model. ``load_model`` refuses external-data locations that leave
the model's folder (the model is untrusted input); ``describe_model`` is what
``hepaudit inspect`` and report.json show; ``find_head`` locates the Sigmoid/Softmax that
turns the logit into the score, so the logit can be exposed exactly rather than
recomputed from a saturated probability.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hepaudit.errors import ModelError
from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import onnx
    from onnx import external_data_helper
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")
    external_data_helper = lazy_module("onnx.external_data_helper")

ACTIVATION_OPS = frozenset({"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus",
                            "PRelu", "HardSigmoid", "Gelu", "Mish", "ThresholdedRelu"})


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]  # ints for fixed dims, a name or None for dynamic ones
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ModelInfo:
    path: str
    sha256: str
    opset: int
    producer: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    n_parameters: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "sha256": self.sha256, "opset": self.opset, "producer": self.producer,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "op_counts": dict(self.op_counts), "n_parameters": self.n_parameters,
        }


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file, checking it is ONNX and that external data stays in its folder."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{path}: not an ONNX model ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph found)")
    _load_external_data(model, path)
    return model


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a model holds: initializers, sparse initializers' values and indices, and the
    tensors of node attributes, in subgraphs (If, Loop, Scan) too."""

    def of_sparse(sparse: onnx.SparseTensorProto) -> Iterator[onnx.TensorProto]:
        yield sparse.values
        yield sparse.indices

    def of_graph(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from of_sparse(sparse)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield from of_sparse(attr.sparse_tensor)
                for sparse in attr.sparse_tensors:
                    yield from of_sparse(sparse)
                if attr.HasField("g"):
                    yield from of_graph(attr.g)
                for sub in attr.graphs:
                    yield from of_graph(sub)

    yield from of_graph(model.graph)


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read every tensor's external data into the model, from files inside the model's folder only.

    Every kind of tensor counts (a sparse initializer's too: onnxruntime would otherwise resolve
    its location against the working directory), so the session is built from bytes and never
    opens a file itself. A location outside the folder (``..``, an absolute path, a symlink out),
    a missing file or data shorter than the tensor is a :class:`ModelError` naming the tensor.
    """
    folder = path.resolve().parent
    for tensor in _all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        where = f"{path}: external data {info.location!r} of tensor {tensor.name or '(unnamed)'!r}"
        target = (folder / info.location).resolve()
        if folder not in target.parents:
            raise ModelError(f"{where} lies outside the model's folder; refusing to read it")
        if not target.is_file():
            raise ModelError(f"{where}: file not found")
        try:
            external_data_helper.load_external_data_for_tensor(tensor, str(folder))
        except Exception as exc:
            raise ModelError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
        expected = _tensor_bytes(tensor)
        if expected is not None and len(tensor.raw_data) < expected:
            raise ModelError(f"{where}: holds {len(tensor.raw_data)} bytes where the tensor needs {expected}")


def _tensor_bytes(tensor: onnx.TensorProto) -> int | None:
    """The bytes a dense tensor's raw data must hold (None for types without a fixed width)."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count * itemsize if tensor.data_type != onnx.TensorProto.STRING else None


def _dtype_name(elem_type: int) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    ttype = value.type.tensor_type
    dims: list[int | str | None] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorInfo(value.name, tuple(dims), _dtype_name(ttype.elem_type))


def graph_inputs(model: onnx.ModelProto) -> tuple[TensorInfo, ...]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights too)."""
    inits = {t.name for t in model.graph.initializer}
    return tuple(_tensor_info(v) for v in model.graph.input if v.name not in inits)


def describe_model(model: onnx.ModelProto, path: str | Path) -> ModelInfo:
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    producer = f"{model.producer_name} {model.producer_version}".strip()
    n_params = sum(int(_numel(t.dims)) for t in model.graph.initializer)
    return ModelInfo(
        path=str(path), sha256=file_sha256(path), opset=opset, producer=producer,
        inputs=graph_inputs(model), outputs=tuple(_tensor_info(v) for v in model.graph.output),
        op_counts=dict(Counter(n.op_type for n in model.graph.node).most_common()),
        n_parameters=n_params,
    )


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that produces it."""
    return {out: node for node in model.graph.node for out in node.output}


_PASS_THROUGH = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Cast"})


@dataclass(frozen=True)
class Head:
    """The score head: ``op`` is "Sigmoid" or "Softmax"; ``logit`` is the tensor it reads.

    ``columns``: when the output is the head's result followed by other columns (HLT
    ParticleNet's Concat of six class probabilities and a pT regression), how many of the
    output's first columns the head makes; None when it makes them all."""

    op: str
    logit: str
    axis: int = -1
    columns: int | None = None


def find_head(model: onnx.ModelProto, output: str) -> Head | None:
    """The Sigmoid or Softmax whose result is ``output`` (through shape-only ops), if any."""
    made_by = producers(model)
    name = output
    columns: int | None = None
    for _ in range(8):
        node = made_by.get(name)
        if node is None:
            return None
        if node.op_type == "Sigmoid":
            return Head("Sigmoid", node.input[0], columns=columns)
        if node.op_type == "Softmax":
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            return Head("Softmax", node.input[0], axis, columns)
        if node.op_type == "Concat" and columns is None and len(node.input) > 1:
            # the head's columns first, then others (a regression): the head covers the first ones
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            width = _last_dim(model, node.input[0])
            if axis not in (-1, 1) or width is None:
                return None
            columns = width
        elif node.op_type not in _PASS_THROUGH:
            return None
        name = node.input[0]
    return None


def _last_dim(model: onnx.ModelProto, tensor: str) -> int | None:
    """The fixed length of a 2-D tensor's last axis: from shape inference, else from the dense
    layer that makes it (through element-wise ops); None if unknown."""
    info = value_types(model).get(tensor)
    dims = info.type.tensor_type.shape.dim if info is not None else []
    if len(dims) == 2 and dims[-1].HasField("dim_value"):
        return int(dims[-1].dim_value)
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    made_by = producers(model)
    name = tensor
    for _ in range(8):
        node = made_by.get(name)
        if node is None:
            return None
        if node.op_type == "Slice" and len(node.input) >= 3:  # the head's columns cut from a wider layer
            start, end = (_constant(model, node.input[i]) for i in (1, 2))
            if start is not None and end is not None and start.size == 1 and 0 <= start[0] < end[0] < 2**31:
                return int(end[0] - start[0])
            return None
        if node.op_type == "Gemm" and node.input[1] in weights:
            shape = weights[node.input[1]]
            trans = any(a.name == "transB" and a.i for a in node.attribute)
            return int(shape[0] if trans else shape[-1])
        if node.op_type == "MatMul" and node.input[1] in weights:
            return int(weights[node.input[1]][-1])
        computed = [i for i in node.input if i and i not in weights]
        if node.op_type not in ("Softmax", "Sigmoid", "Add", "Sub", "Mul", "Div", "Identity", "Cast", "Relu"
                                ) or len(computed) != 1:
            return None
        name = computed[0]
    return None


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """An initializer's or a Constant node's value, else None."""
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t).reshape(-1)
    node = producers(model).get(name)
    if node is not None and node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return onnx.numpy_helper.to_array(a.t).reshape(-1)
    return None


def value_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Type information for every tensor we can infer (inputs, outputs, intermediates)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}
    return infos


def with_extra_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the model that also returns the named intermediate tensors."""
    existing = {o.name for o in model.graph.output}
    wanted = [n for n in names if n not in existing]
    if not wanted:
        return model
    known = producers(model)
    missing = [n for n in wanted if n not in known and n not in {i.name for i in model.graph.input}]
    if missing:
        raise ModelError(f"the model has no tensor named {missing[0]!r}")
    types = value_types(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in wanted:
        if name in types:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(types[name])
            # drop the inferred shape: exporters' symbolic dims can disagree with onnxruntime
            vi.type.tensor_type.ClearField("shape")
        else:
            vi = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        copy.graph.output.append(vi)
    return copy
