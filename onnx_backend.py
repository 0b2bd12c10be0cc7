"""ember as an ONNX backend: `onnx.backend.base.Backend` over `ember.compile`, so tools written
for that interface (onnx's own `BackendTest` among them) run ember.

    import ember.onnx_backend as backend
    rep = backend.prepare(model)             # compiles for target "llvm"
    outputs = rep.run([x])                   # or rep.run({"input": x})

A thin adapter: the compiler does the work; this maps the interface's calling conventions
(positional or named inputs, numpy scalars, named-tuple outputs) onto `Module.run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

import ember

DEFAULT_TARGET = "llvm"


class EmberBackendRep(BackendRep):
    """A compiled model, run with inputs in graph-input order (a list) or by name (a dict)."""

    def __init__(self, module: ember.Module, input_names: Sequence[str],
                 output_names: Sequence[str]):
        self.module = module
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray) or np.isscalar(inputs):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) > len(self.input_names):
                raise ember.InputError(
                    f"the model takes {len(self.input_names)} input(s) "
                    f"({', '.join(self.input_names)}), got {len(inputs)}"
                )
            feeds = dict(zip(self.input_names, inputs))
        # Scalars (Python or numpy) become 0-d arrays, keeping their numpy dtype; sequences
        # (lists) and empty optionals (None) stay as they are.
        feeds = {name: value if value is None or isinstance(value, list) else np.asarray(value)
                 for name, value in feeds.items()}
        outputs = self.module.run(feeds)
        return namedtupledict("Outputs", self.output_names)(*outputs)


class EmberBackend(Backend):
    """ONNX backend interface over ember; CPU only, target "llvm" unless `target=` says."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU",
                **kwargs: Any) -> EmberBackendRep:
        cls._check_device(device)
        super().prepare(model, device, **kwargs)
        return cls._compile(model, **kwargs)

    @classmethod
    def _compile(cls, model: onnx.ModelProto, **kwargs: Any) -> EmberBackendRep:
        target = kwargs.pop("target", DEFAULT_TARGET)
        options = {k: kwargs[k] for k in ("input_shapes", "num_threads") if k in kwargs}
        module = ember.compile(model, target=target, **options)
        initializers = {init.name for init in model.graph.initializer}
        input_names = [i.name for i in model.graph.input if i.name not in initializers]
        output_names = [o.name for o in model.graph.output]
        return EmberBackendRep(module, input_names, output_names)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        """Run one node: wrap it in a model whose inputs take the given arrays' types."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        present = [name for name in node.input if name]
        if isinstance(inputs, Mapping):
            arrays = {name: np.asarray(inputs[name]) for name in present}
        else:
            arrays = {name: np.asarray(value) for name, value in zip(present, inputs)}
        graph_inputs = [
            helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
            for name, array in arrays.items()
        ]
        graph_outputs = []
        for i, name in enumerate(node.output):
            if not name:
                continue
            if outputs_info is not None and i < len(outputs_info):
                dtype, shape = outputs_info[i]
                graph_outputs.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
            else:
                graph_outputs.append(helper.make_empty_tensor_value_info(name))
        graph = helper.make_graph([node], f"{node.op_type}_node", graph_inputs, graph_outputs)
        opset = kwargs.pop("opset_version", None)
        opset_imports = [helper.make_opsetid(node.domain, opset)] if opset is not None else None
        model = helper.make_model(graph, opset_imports=opset_imports)
        # onnx's shape inference types the outputs outputs_info left open; the node itself was
        # checked above, and a model with an untyped output would not pass check_model.
        model = onnx.shape_inference.infer_shapes(model)
        cls._check_device(device)
        return cls._compile(model, **kwargs).run(arrays)

    @classmethod
    def _check_device(cls, device: str) -> None:
        if not cls.supports_device(device):
            raise ember.TargetError(f"device {device!r} is not supported; ember runs on CPU")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            return Device(device).type == DeviceType.CPU
        except (AttributeError, ValueError):
            return False


prepare = EmberBackend.prepare
run_model = EmberBackend.run_model
run_node = EmberBackend.run_node
supports_device = EmberBackend.supports_device
