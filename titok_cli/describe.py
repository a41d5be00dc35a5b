"""What a file on disk is: a token file or a checkpoint, described without running a model.

`describe(path)` returns a JSON-ready dict (`titok info --json` prints it unchanged);
`describe_text.summary(desc)` gives the same as (label, value) lines for people. Token files are read with
`token_file.load_tokens`; checkpoints are read from config.json and the safetensors header,
so parameter counts come without loading a tensor. Imports neither typer nor rich, and
torch only for pickled `.bin` weights.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from . import registry
from .config import (
    GeneratorConfig,
    generator_config_from_dict,
    has_generator,
    has_tokenizer,
    read_config_file,
    resolve_interpolations,
    tokenizer_config_from_dict,
)
from .errors import ConfigError, UsageError
from .weights_header import weights_summary

TOKEN_SUFFIXES = (".npy", ".npz", ".tar")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_HUB_SNAPSHOT = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})(/|$)")


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Describe a token file (.npy/.npz/.tar), a checkpoint folder, config.json or weights file.

    A name that is not on disk is looked up as a registry name or Hub repo id in the local
    Hugging Face cache (never on the network).
    """
    p = Path(path)
    if p.is_dir():
        snapshot = _main_snapshot(p)
        return describe_checkpoint(snapshot if snapshot is not None else p)
    if not p.exists():
        return describe_named(os.fspath(path))
    if p.suffix in TOKEN_SUFFIXES:
        return describe_token_file(p)
    if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json":
        return describe_checkpoint(p)
    raise UsageError(f"{p}: not a token file (.npy, .npz, .tar) or a checkpoint (folder, config.json, weights)")


# -- token files ------------------------------------------------------------------------------


def describe_token_file(path: str | os.PathLike) -> dict[str, Any]:
    """Shape, dtype, model, rows, labels and failures of a token file and its manifest."""
    import numpy as np

    from .token_file import load_tokens, manifest_path

    tf = load_tokens(path, as_stored=True)  # the file's own dtype; a .npy stays memory-mapped
    arr, header = tf.tokens, tf.header
    manifest = manifest_path(tf.path) if tf.path is not None else None
    out: dict[str, Any] = {
        "kind": "tokens",
        "path": str(path),
        "format": Path(path).suffix.lstrip("."),
        "manifest": str(manifest) if header and manifest is not None and manifest.is_file() else None,
        "rows": int(arr.shape[0]),
        "shape": [int(x) for x in arr.shape],
        "dtype": str(arr.dtype),
        "content": "float latents [N,C,K]" if tf.is_latent else "token ids [N,K]" + (
            " and the mirrored crops' ids (tokens_hflip)" if tf.tokens_hflip is not None else ""),
        "tokens_per_row": int(arr.shape[-1]),
    }
    if len(arr):
        values = np.asarray(arr)
        if tf.is_latent:
            out["value_range"] = [float(values.min()), float(values.max())]
        else:
            out["id_range"] = [int(values.min()), int(values.max())]
    out["model"] = _model_of_tokens(header)
    for key in ("tool", "compute_dtype", "inputs", "sampling"):
        if key in header:
            out[key] = header[key]
    if "generator" in header:
        out["generator"] = {k: v for k, v in header["generator"].items() if k != "weights"}
    names = tf.names or []
    out["names"] = {"count": len(names), "first": names[0] if names else None, "last": names[-1] if names else None}
    out["labels"] = _labels(tf.labels)
    out["failures"] = [{"path": f.get("path"), "reason": f.get("reason", "")} for f in tf.failures]
    return out


def _model_of_tokens(header: dict[str, Any]) -> dict[str, Any] | None:
    model = header.get("model")
    if not model:
        return None
    keys = ("name", "repo", "revision", "local_path", "quantize_mode", "num_tokens", "codebook_size",
            "token_size", "image_size")  # fmt: skip
    return {k: model[k] for k in keys if model.get(k) is not None}


def _labels(labels: Any) -> dict[str, Any] | None:
    if labels is None:
        return None
    known = [int(x) for x in labels if int(x) >= 0]
    counts = Counter(known)
    return {"labelled_rows": len(known), "classes": len(counts),
            "most_common": [[c, n] for c, n in counts.most_common(5)]}  # fmt: skip


# -- checkpoints ------------------------------------------------------------------------------


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Architecture, parameter count, sampling defaults and provenance of a checkpoint."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    config_path = folder / "config.json"
    weights = p if p.suffix in WEIGHT_SUFFIXES else _weights_in(folder)
    if p.is_dir() and weights is None and not config_path.is_file():
        raise UsageError(f"{p}: neither a checkpoint folder (config.json, model.safetensors) nor a token file")

    out: dict[str, Any] = {"kind": "checkpoint", "path": str(p), "config": None, "weights": None}
    config: dict[str, Any] | None = None
    if config_path.is_file():
        config = resolve_interpolations(read_config_file(config_path))
        out["config"] = str(config_path)
    if weights is not None:
        out["weights"] = {"file": str(weights), **weights_summary(weights)}

    entry = _registry_entry(config, out["weights"], folder)
    try:
        out["architecture"] = architecture(config) if config is not None else None
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    if out["architecture"] is not None:
        out["kind"] = out["architecture"]["kind"]
    elif entry is not None:
        out["architecture"] = architecture(entry.config)
        out["architecture"]["from"] = f"registry entry {entry.name} (no config.json here)"
        out["kind"] = entry.kind
    out["provenance"] = provenance(folder, entry)
    trained = training_record(config)
    if trained:
        out["training"] = trained
    if out["kind"] == "generator":
        source = config if config is not None else entry.config  # type: ignore[union-attr]
        out["sampling"] = sampling_defaults(source, entry)
    return out


def _main_snapshot(folder: Path) -> Path | None:
    """A repo folder of a Hub cache (`models--owner--name/`) -> its snapshot at refs/main."""
    ref = folder / "refs" / "main"
    if not folder.name.startswith("models--") or not ref.is_file():
        return None
    snapshot = folder / "snapshots" / ref.read_text(encoding="utf-8").strip()
    return snapshot if snapshot.is_dir() else None


def describe_named(name: str) -> dict[str, Any]:
    """A registry name or Hub repo id: its cached snapshot if there is one, else the registry's facts."""
    from huggingface_hub import try_to_load_from_cache

    entry = registry.find(name)
    repo, _, revision = (entry.repo or "", "", entry.revision or "") if entry else name.partition("@")
    if repo and re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        cached = try_to_load_from_cache(repo, "config.json", revision=revision or None)
        if isinstance(cached, str):
            return describe_checkpoint(Path(cached).parent)
    if entry is None:
        raise UsageError(f"{name}: no such file or folder, and not a registry name or a Hub repo in the local cache")
    arch = architecture(entry.config)
    out: dict[str, Any] = {"kind": entry.kind, "path": name, "config": None, "architecture": arch,
                           "weights": None, "parameters_from_registry": entry.num_parameters,
                           "provenance": {"registry_name": entry.name, "repo": entry.repo, "revision": entry.revision,
                                          "how": "weights not in the local cache" if entry.repo
                                          else "architecture only (no public weights)"}}  # fmt: skip
    if entry.kind == "generator":
        out["sampling"] = sampling_defaults(entry.config, entry)
    return out


def _weights_in(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def architecture(config: dict[str, Any]) -> dict[str, Any] | None:
    """The fields that decide the network, from a (resolved) official nested config.

    A tokenizer's config.json also carries its generator's section (as the official
    titok_l32.yaml does), so the tokenizer is tested first, as the loaders do.
    """
    if has_tokenizer(config):
        t = tokenizer_config_from_dict(config)
        return {"kind": "tokenizer", "quantize_mode": t.quantize_mode, "image_size": t.image_size,
                "tokens": t.num_latent_tokens, "codebook_size": t.codebook_size, "token_size": t.token_size,
                "encoder": f"ViT-{t.vit_enc_model_size}/{t.vit_enc_patch_size}",
                "decoder": f"ViT-{t.vit_dec_model_size}/{t.vit_dec_patch_size}",
                "two_stage": t.finetune_decoder, "legacy_layout": t.is_legacy}  # fmt: skip
    if has_generator(config):
        g = generator_config_from_dict(config)
        return {"kind": "generator", "model_type": g.model_type, "image_size": g.image_size,
                "tokens": g.image_seq_len, "codebook_size": g.codebook_size,
                "classes": g.condition_num_classes, "hidden_size": g.hidden_size,
                "layers": g.num_hidden_layers, "heads": g.num_attention_heads,
                "mlp_size": g.intermediate_size}  # fmt: skip
    raise ConfigError("config.json describes neither a TiTok tokenizer (model.vq_model) nor a generator")


def _leaves(doc: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    return out


def _registry_entry(config: dict[str, Any] | None, weights: dict[str, Any] | None,
                    folder: Path) -> registry.ModelEntry | None:  # fmt: skip
    """The registry entry this checkpoint is: by its Hub cache repo, else by config and size."""
    hub = _hub_snapshot(folder)
    if hub is not None:
        entry = registry.find(hub[0])
        if entry is not None:
            return entry
    if config is None and weights is None:
        return None
    mine = _leaves(config) if config is not None else {}
    matches = []
    for entry in registry.all_entries():
        if entry.architecture_only:
            continue
        if config is not None and any(mine.get(k) != v for k, v in _leaves(entry.config).items()):
            continue
        if config is None and weights["parameters"] != entry.num_parameters:  # type: ignore[index]
            continue  # weights alone: recognised by their size
        matches.append(entry)
    return matches[0] if len(matches) == 1 else None  # two generators of one size: no guess


def _hub_snapshot(folder: Path) -> tuple[str, str] | None:
    """(repo id, commit) when `folder` is a snapshot in a huggingface_hub cache."""
    match = _HUB_SNAPSHOT.search(folder.resolve().as_posix() + "/") or _HUB_SNAPSHOT.search(folder.as_posix() + "/")
    if match is None:
        return None
    return f"{match['owner']}/{match['name']}", match["commit"]


def provenance(folder: Path, entry: registry.ModelEntry | None) -> dict[str, Any]:
    """Where the files came from, as far as the folder and the registry tell."""
    out: dict[str, Any] = {"registry_name": entry.name if entry else None,
                           "repo": entry.repo if entry else None,
                           "revision": entry.revision if entry else None,
           "how": "a local folder: no Hub cache layout, no download record, no registry match"}  # fmt: skip
    hub = _hub_snapshot(folder)
    local_meta = folder / ".cache" / "huggingface" / "download"
    if hub is not None:
        out.update(repo=hub[0], revision=hub[1], how="Hugging Face cache snapshot")
    elif local_meta.is_dir():
        commits = set()
        for meta in local_meta.glob("*.metadata"):
            first = meta.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
            commits.update(line.strip() for line in first if line.strip())
        out["how"] = "huggingface_hub download into a local folder"
        if len(commits) == 1:
            out["revision"] = commits.pop()
    elif entry is not None:
        out["how"] = "recognised by its architecture (config.json or parameter count)"
    return out


def training_record(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """What `titok train` / `titok finetune` recorded in a final/ folder's config.json (None otherwise)."""
    experiment = (config or {}).get("experiment")
    if not isinstance(experiment, dict) or not experiment.get("trained_with"):
        return None
    keys = ("trained_with", "tokenizer", "finetuned_from", "trained_parts", "frozen_parts")
    record = {k: experiment[k] for k in keys if experiment.get(k) is not None}
    training = config.get("training")
    steps = training.get("max_train_steps") if isinstance(training, dict) else None
    return {**record, "steps": steps} if steps is not None else record


def sampling_defaults(config: dict[str, Any], entry: registry.ModelEntry | None) -> dict[str, Any]:
    """The settings `titok sample` uses with no sampling flags, and where they come from."""
    cfg = generator_config_from_dict(config)
    values = (entry.with_sampling(cfg) if entry is not None else cfg).sampling_defaults()
    if entry is not None and entry.sampling:
        source = f"official settings of {entry.name} (registry)"
    else:
        given = (config.get("model") or {}).get("generator") or {}
        from_config = [k for k in GeneratorConfig.SAMPLING_KEYS if k in given]
        source = "config.json" if from_config else "library defaults"
        if len(from_config) < len(GeneratorConfig.SAMPLING_KEYS):
            source += " (no official sampling settings: library defaults for the rest)"
    return {**values, "source": source}
