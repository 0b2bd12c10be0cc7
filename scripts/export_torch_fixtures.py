"""Regenerate tests/fixtures/torch: small PyTorch models exported to ONNX with example data.

    python scripts/export_torch_fixtures.py                  # rewrite tests/fixtures/torch
    python scripts/export_torch_fixtures.py --out DIR        # write elsewhere (the optional test)
    python scripts/export_torch_fixtures.py --only bert_tiny_ts cnn_small_ts

Needs the `export` extra (`pip install -e .[export]`: torch 2.13 CPU, transformers, onnxscript).
Every model is built from a config class or plain `nn.Module` code with fixed seeds, nothing is
downloaded. Each fixture is `<name>.onnx` (weights inline, well under 5 MB) and `<name>.npz`
holding the example inputs under their graph-input names and torch's outputs as `output_<i>`,
in graph-output order. The batch and sequence dimensions are symbolic where that is natural;
tests/integration/test_torch_fixtures.py pins them to the stored inputs' shapes.

Two exporters, because they emit very different graphs from the same module: the TorchScript
exporter (`dynamo=False`, suffix `_ts`: Gather/Unsqueeze/Concat shape arithmetic, older
opsets) and the dynamo exporter (`dynamo=True`, suffix `_dynamo`: opset 18+, folded shapes,
onnxscript-built functions inlined). A model the dynamo exporter cannot handle here is
skipped with a message, never a failure of the whole run.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "torch")
#: the commit-size rule for fixtures
MAX_BYTES = 5 * 1024 * 1024
SEED = 0
VOCAB = 256


@dataclass(frozen=True)
class Fixture:
    """One export: `build()` returns (module, example inputs by name, dynamic dims by name)."""

    name: str
    build: Callable[[], tuple[nn.Module, dict[str, torch.Tensor], dict[str, dict[int, str]]]]
    output_names: tuple[str, ...]
    dynamo: bool
    opset: int


# -- models


class TupleOutputs(nn.Module):
    """Calls a transformers model with `input_ids` and `attention_mask` by keyword and returns
    the named output fields as a tuple: exporters want tensors, not ModelOutput dictionaries."""

    def __init__(self, model: nn.Module, fields: Sequence[str]):
        super().__init__()
        self.model = model
        self.fields = tuple(fields)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                             return_dict=True)
        return tuple(outputs[field] for field in self.fields)


def token_ids(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), dtype=torch.int64)


def token_inputs(batch: int, length: int) -> tuple[dict, dict]:
    """Token ids and an attention mask (the last sequence right-padded by 3), with symbolic
    batch and sequence dimensions. (Without a mask, transformers' causal-mask code looks for
    packed sequences with torch.diff, which the TorchScript exporter cannot export.)"""
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[-1, length - 3:] = 0
    dims = {0: "batch", 1: "sequence"}
    inputs = {"input_ids": token_ids(batch, length), "attention_mask": mask}
    return inputs, {"input_ids": dims, "attention_mask": dims}


def build_bert_tiny():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=64, attn_implementation="eager")
    model = TupleOutputs(BertModel(config), ["last_hidden_state", "pooler_output"])
    return model, *token_inputs(2, 12)


def build_gpt2_tiny():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                        attn_implementation="eager")
    model = TupleOutputs(GPT2LMHeadModel(config), ["logits"])
    return model, *token_inputs(2, 10)


def build_llama_tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    # grouped KV heads (4 query heads over 2), RMSNorm, RoPE, SwiGLU
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, attn_implementation="eager")
    model = TupleOutputs(LlamaForCausalLM(config), ["logits"])
    return model, *token_inputs(2, 9)


class InvertedResidual(nn.Module):
    """MobileNetV3-style block: 1x1 expand, depthwise 3x3, 1x1 project, with BN and
    hardswish, and a residual when the shape allows."""

    def __init__(self, channels_in: int, channels_out: int, expand: int, stride: int):
        super().__init__()
        hidden = channels_in * expand
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, channels_out, 1, bias=False), nn.BatchNorm2d(channels_out),
        )
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class SmallCNN(nn.Module):
    """A MobileNet-ish classifier: stem conv, inverted residual blocks with depthwise
    convolutions, squeeze-excitation, adaptive average pooling and a linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 2, 1), InvertedResidual(16, 24, 3, 2),
                                    InvertedResidual(24, 24, 3, 1))
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(24, 8, 1), nn.ReLU(),
                                     nn.Conv2d(8, 24, 1), nn.Hardsigmoid())
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.head = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = x * self.squeeze(x)
        return self.head(torch.flatten(self.pool(x), 1))


def randomize_batchnorm(model: nn.Module) -> None:
    """Fresh BatchNorms are the identity; random statistics make the folded scales matter."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


def build_cnn_small():
    model = SmallCNN()
    randomize_batchnorm(model)
    return model, {"image": torch.randn(2, 3, 32, 32)}, {"image": {0: "batch"}}


class SequenceClassifier(nn.Module):
    """A GRU over embedded tokens followed by an LSTM and a linear head on the last step."""

    def __init__(self, features: int = 16, hidden: int = 24, classes: int = 5):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.gru(x)
        y, _ = self.lstm(y)
        return self.head(y[:, -1])


def build_rnn_small():
    return (SequenceClassifier(), {"features": torch.randn(2, 7, 16)},
            {"features": {0: "batch", 1: "sequence"}})


class ViTBlock(nn.Module):
    """Patch embedding, one pre-norm transformer encoder layer (torch's own multi-head
    attention, GELU MLP) and a mean-pooled linear head."""

    def __init__(self, width: int = 48, heads: int = 4, patch: int = 4, classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.position = nn.Parameter(torch.randn(1, 64, width) * 0.02)
        self.norm1 = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width))
        self.head = nn.Linear(width, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.embed(image).flatten(2).transpose(1, 2) + self.position
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(dim=1))


def build_vit_block():
    return ViTBlock(), {"image": torch.randn(2, 3, 32, 32)}, {"image": {0: "batch"}}


#: name -> (builder, output names, TorchScript opset, dynamo opset). The opsets vary so the
#: fixtures cover different ONNX forms: HardSwish below opset 14 is HardSigmoid times x, the
#: TorchScript exporter emits LayerNormalization from 17 on, nn.GELU is one Gelu node from 20.
MODELS = {
    "bert_tiny": (build_bert_tiny, ("last_hidden_state", "pooler_output"), 17, 18),
    "gpt2_tiny": (build_gpt2_tiny, ("logits",), 14, 18),
    "llama_tiny": (build_llama_tiny, ("logits",), 14, 18),
    "cnn_small": (build_cnn_small, ("logits",), 11, 18),
    "rnn_small": (build_rnn_small, ("logits",), 14, 18),
    "vit_block": (build_vit_block, ("logits",), 17, 20),
}

FIXTURES = [
    Fixture(f"{model}_{'dynamo' if dynamo else 'ts'}", build, outputs, dynamo,
            dynamo_opset if dynamo else script_opset)
    for model, (build, outputs, script_opset, dynamo_opset) in MODELS.items()
    for dynamo in (False, True)
]


# -- export


def export(fixture: Fixture) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The exported model (weights inline) and the npz contents: inputs and torch outputs."""
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    model, inputs, dynamic = fixture.build()
    model.eval()
    args = tuple(inputs.values())
    with torch.no_grad():
        expected = model(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fixture.dynamo:
            named = {}  # one Dim object per name: inputs that share a name share the size
            shapes = {name: {axis: named.setdefault(dim, torch.export.Dim(dim, max=64))
                             for axis, dim in dims.items()}
                      for name, dims in dynamic.items()} or None
            program = torch.onnx.export(model, args, input_names=list(inputs),
                                        output_names=list(fixture.output_names),
                                        dynamic_shapes=_positional(shapes, inputs),
                                        opset_version=fixture.opset, dynamo=True,
                                        verbose=False)
            program.optimize()
            proto = program.model_proto
        else:
            torch.onnx.export(model, args, buffer, input_names=list(inputs),
                              output_names=list(fixture.output_names),
                              dynamic_axes=dynamic or None, opset_version=fixture.opset,
                              do_constant_folding=True, dynamo=False)
            proto = onnx.load_from_string(buffer.getvalue())
    data = {name: value.numpy() for name, value in inputs.items()}
    data.update({f"output_{i}": value.numpy() for i, value in enumerate(expected)})
    return proto, data


def _positional(shapes: dict | None, inputs: dict[str, torch.Tensor]) -> tuple | None:
    # the dynamo exporter matches dynamic shapes to forward()'s parameters, in order
    if shapes is None:
        return None
    return tuple(shapes.get(name) for name in inputs)


def strip_metadata(graph: onnx.GraphProto) -> None:
    """Drop the exporters' per-node stack traces and doc strings: they name this machine's
    paths and this script's line numbers, so the bytes would change with every edit."""
    for node in graph.node:
        del node.metadata_props[:]
        node.ClearField("doc_string")  # proto2: assigning "" would still write the field
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                strip_metadata(attr.g)
            for subgraph in attr.graphs:
                strip_metadata(subgraph)
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        del value.metadata_props[:]


def write(fixture: Fixture, out: str) -> str:
    proto, data = export(fixture)
    strip_metadata(proto.graph)
    onnx.checker.check_model(proto, full_check=True)
    serialized = proto.SerializeToString()
    if len(serialized) > MAX_BYTES:
        raise SystemExit(f"{fixture.name}: {len(serialized)} bytes, over the 5 MB fixture limit")
    path = os.path.join(out, f"{fixture.name}.onnx")
    with open(path, "wb") as file:
        file.write(serialized)
    np.savez(os.path.join(out, f"{fixture.name}.npz"), **data)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder to write the fixtures into")
    parser.add_argument("--only", nargs="*", help="fixture names to export (default: all)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    chosen = [f for f in FIXTURES if not args.only or f.name in args.only]
    unknown = set(args.only or ()) - {f.name for f in FIXTURES}
    if unknown:
        parser.error(f"unknown fixtures {sorted(unknown)}; known: {[f.name for f in FIXTURES]}")
    failed = []
    for fixture in chosen:
        try:
            path = write(fixture, args.out)
        except Exception as error:  # an exporter failure skips that fixture only
            if not fixture.dynamo:
                raise
            failed.append(fixture.name)
            print(f"skipped {fixture.name}: {type(error).__name__}: {error}"[:400],
                  file=sys.stderr)
            continue
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    if failed:
        print(f"the dynamo exporter failed on {failed}; their fixtures were not written",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
