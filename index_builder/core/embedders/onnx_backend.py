"""The ONNX Runtime backend: a local sentence-transformers model exported once to int8 ONNX, run on the CPU.

The export is a build step from the model folder on disk (never a download): the transformer plus its mean
pooling and L2 normalisation are traced into one graph (torch's exporter) and its weights quantized to
int8 per channel (ONNX Runtime's dynamic quantization). The result is cached
under ``$CARTWISE_CACHE/models/`` keyed by the model files, the library versions and the weights' kind, and
copied into the bundle (``embedder/``), so the assistant embeds queries with the same graph and needs no torch.

The weights' kind (:func:`weight_kind`) follows the CPU: signed int8 where the CPU has int8 dot products
(VNNI, AMX: exact and fastest), unsigned elsewhere on x86. Without VNNI, ONNX Runtime multiplies uint8
activations by int8 weights with an instruction that saturates at 16 bits; its documentation's remedy is
uint8 weights. Measured on an AMD EPYC without VNNI, on 256 of ~30-word catalog texts: mean cosine to torch's
vectors 0.9895 with int8 weights (under ``auto``'s 0.99: a 100,000-product build fell back to torch at 58
texts/s) and 0.9927 with uint8, at 0.8-0.9x int8's speed and ~1.9x torch's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.core.embedders.base import DEFAULT_MODEL, Embedder, normalize
from index_builder.core.embedders.cache import folder_key, versions
from index_builder.core.embedders.torch_backend import minilm_path
from index_builder.core.errors import ModelFitError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "export.json"
BACKEND = "onnx-int8"


LIBRARIES = ("torch", "onnx", "onnxruntime", "transformers")  # the export depends on these versions
WEIGHTS_ENV = "CARTWISE_ONNX_WEIGHTS"  # s8 or u8: the weights' kind, whatever the CPU (a cluster's executors)
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"}  # /proc/cpuinfo: int8 dot products


def weight_kind(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """``s8`` (int8 weights) or ``u8`` (uint8) for this CPU (module docstring); ``$CARTWISE_ONNX_WEIGHTS`` decides
    when set. ``cpuinfo`` and ``machine`` (``platform.machine()``) are read from the system when not given."""
    import platform

    forced = os.environ.get(WEIGHTS_ENV, "").strip().lower()
    if forced:
        if forced not in ("s8", "u8"):
            raise ValueError(f"{WEIGHTS_ENV}={forced!r}: use s8 (int8 weights) or u8 (uint8 weights)")
        return forced
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return "s8"  # ARM and others: ONNX Runtime's default, no 16-bit saturation there
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "u8"  # cannot tell: the kind that is exact on every x86 CPU
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return "s8" if flags & VNNI_FLAGS else "u8"


def models_cache() -> Path:
    from index_builder.core.settings import cache_root

    return cache_root() / "models"


def _target(model_path: str | Path | None, model: str, cache: Path | None) -> tuple[Path, Path, str]:
    """(the model's folder, its export's folder for this CPU's weights, the weights' kind)."""
    src = Path(model_path or minilm_path())
    kind = weight_kind()
    suffix = "" if kind == "s8" else f"-{kind}"  # s8 keeps the folder name exports had before u8 existed
    return src, (cache or models_cache()) / f"{model}-{BACKEND}{suffix}-{folder_key(src, LIBRARIES)}", kind


def exported(model_path: str | Path | None = None, *, model: str = DEFAULT_MODEL, cache: Path | None = None
             ) -> Path | None:
    """The folder :func:`export_onnx` would return, when the export is already there (None: it is not)."""
    target = _target(model_path, model, cache)[1]
    return target if (target / META_FILE).is_file() else None


def export_onnx(model_path: str | Path | None = None, *, model: str = DEFAULT_MODEL, cache: Path | None = None) -> Path:
    """Export (or find already exported) the int8 ONNX graph of a sentence-transformers folder; returns its folder.

    Mean pooling over the attention mask and the L2 norm are part of the graph (the pooling all-MiniLM-L6-v2
    was trained with); the weights are int8 or uint8 by :func:`weight_kind`. Several processes asking at once
    wait on a file lock; the folder appears by one rename.
    """
    import fcntl

    src, target, kind = _target(model_path, model, cache)
    pooling = src / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
        raise ModelFitError(f"{src}: the ONNX backend supports mean-pooling models only; use --embed-backend torch")
    if (target / META_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / META_FILE).is_file():
            return target
        tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _export(src, tmp, kind)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _export(src: Path, out: Path, kind: str = "s8") -> None:
    import warnings

    import onnx
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoConfig, AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.utils.logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(src)
    # Eager attention traces to a plain additive mask; the SDPA path leaves Where/IsNaN nodes that cost a third
    # of the run time.
    encoder = AutoModel.from_pretrained(src, attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    example = torch.ones(2, 16, dtype=torch.long)
    fp32 = out / "fp32.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(Pooled(encoder), (example, example), str(fp32), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "embedding": {0: "batch"}})
    # Per-channel weights: per-tensor int8 drops the mean cosine to torch's vectors to 0.945; per-channel keeps 0.994.
    weight_type = QuantType.QInt8 if kind == "s8" else QuantType.QUInt8
    def advice(record: logging.LogRecord) -> bool:  # quantize_dynamic's "consider to run pre-processing" warning
        return "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        quantize_dynamic(str(fp32), str(out / MODEL_FILE), weight_type=weight_type, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.removeFilter(advice)
    fp32.unlink()
    shutil.copy(src / TOKENIZER_FILE, out / TOKENIZER_FILE)
    max_len = 256
    st_config = src / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = int(json.loads(st_config.read_text()).get("max_seq_length", max_len))
    meta = {"source": str(src), "dim": int(config.hidden_size), "max_seq_length": max_len, "versions": versions(LIBRARIES),
            "weights": kind, "steps": ["torch.onnx.export, eager attention, mean pooling + L2 norm in the graph",
                                       f"onnxruntime dynamic quantization: {'int8' if kind == 's8' else 'uint8'} "
                                       "weights per channel"]}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


class OnnxEmbedder(Embedder):
    """Runs an exported folder (:func:`export_onnx`) with ONNX Runtime on the CPU.

    One text per run by default: dynamic quantization scales the activations of each run as a whole, so in a
    batch a text's vector would depend on its batch-mates (and on their padding). Alone, a product text and the
    same words typed in the chat give the same vector; on 2 cores it is as fast as batches of 16.
    """

    backend = BACKEND

    def __init__(self, folder: str | Path, *, model: str = DEFAULT_MODEL, batch_size: int = 1,
                 threads: int | None = None) -> None:
        self.folder = str(folder)
        self.model = model
        self.batch_size = batch_size
        self.threads = threads
        meta_path = Path(folder) / META_FILE
        if not meta_path.is_file():
            raise ModelFitError(f"{folder} is not an exported ONNX model (no {META_FILE}); "
                                "rebuild the bundle, or build with --embed-backend torch")
        self.meta = json.loads(meta_path.read_text())
        self._session = None
        self._tokenizer = None

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def _load(self):
        if self._session is None:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads or 0  # 0: ONNX Runtime's default (the cores)
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(Path(self.folder) / MODEL_FILE), options,
                                                 providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(Path(self.folder) / TOKENIZER_FILE))
            tokenizer.enable_truncation(int(self.meta.get("max_seq_length", 256)))
            tokenizer.enable_padding()
            self._tokenizer = tokenizer
        return self._session, self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        session, tokenizer = self._load()
        texts = [str(t) for t in texts]
        order = np.argsort([len(t) for t in texts], kind="stable")
        for lo in range(0, len(texts), self.batch_size):
            rows = order[lo:lo + self.batch_size]
            encoded = tokenizer.encode_batch([texts[i] for i in rows])
            feed = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}
            out[rows] = session.run(None, feed)[0]
        return normalize(out)

    def spec(self) -> dict[str, Any]:
        return {"kind": "onnx", "folder": self.folder, "model": self.model, "batch_size": self.batch_size,
                "threads": self.threads}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "device": "cpu"}
