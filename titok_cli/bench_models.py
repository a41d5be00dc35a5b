"""The models a benchmark runs: real weights when they are already local, random ones otherwise.

Registry presets whose weights are not in the local Hugging Face cache, and the architecture-only
presets (the 512x512 ones), are built with random weights of the same architecture: a benchmark
never downloads. Local folders and Hub ids load through `titok_cli.loading`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from . import registry
from .bench_result import ModelInfo, Note
from .errors import UsageError
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer

DEFAULT_MODELS = {256: "titok-l32", 512: "titok-l64-512"}


@dataclass
class BenchModels:
    """A tokenizer, its generator if any (paired and compatible), what they are, and notes."""

    tokenizer: TiTokTokenizer
    generator: TiTokGenerator | None
    tokenizer_info: ModelInfo
    generator_info: ModelInfo | None
    notes: list[Note] = field(default_factory=list)

    @property
    def weights(self) -> str:
        infos = [self.tokenizer_info] + ([self.generator_info] if self.generator_info else [])
        return "pretrained" if all(i.weights == "pretrained" for i in infos) else "random"


def default_model(resolution: int | None) -> str:
    """The registry tokenizer bench uses at `resolution` (256 when not given)."""
    name = DEFAULT_MODELS.get(resolution or 256)
    if name is None:
        raise UsageError(f"no default model at resolution {resolution}; pass a model (defaults: {DEFAULT_MODELS})")
    return name


def _in_hf_cache(repo: str, revision: str | None = None) -> bool:
    """True when config.json and the weights of `repo` are in the local Hub cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    cfg = try_to_load_from_cache(repo, "config.json", revision=revision)
    weights = [try_to_load_from_cache(repo, f, revision=revision) for f in ("model.safetensors", "pytorch_model.bin")]
    return isinstance(cfg, str) and any(isinstance(w, str) for w in weights)


def _random_note(entry: registry.ModelEntry, weights: str) -> list[Note]:
    if entry.architecture_only:
        return [Note("architecture-only", f"{entry.name} is architecture only (no public weights): random weights")]
    if weights == "random":
        return [Note("not-cached", f"{entry.repo} is not in the local Hugging Face cache: random weights")]
    return []


def _registry_tokenizer(entry: registry.ModelEntry) -> tuple[TiTokTokenizer, str]:
    if not entry.architecture_only and entry.repo and _in_hf_cache(entry.repo, entry.revision):
        from .loading import load_tokenizer

        return load_tokenizer(entry.name, device="cpu"), "pretrained"
    return TiTokTokenizer.from_config(entry.config), "random"


def _registry_generator(entry: registry.ModelEntry) -> tuple[TiTokGenerator, str]:
    if not entry.architecture_only and entry.repo and _in_hf_cache(entry.repo, entry.revision):
        from .loading import load_generator

        return load_generator(entry.name, device="cpu"), "pretrained"
    return TiTokGenerator.from_config(entry.generator_config), "random"  # with the registry's sampling


def _generator(spec: str) -> tuple[TiTokGenerator, str, str, list[Note]]:
    """(generator, weights, name, notes) for a --generator given by name, folder or Hub id."""
    entry = registry.find(spec) if not os.path.exists(spec) else None
    if entry is None:
        from .loading import load_generator

        return load_generator(spec, device="cpu"), "pretrained", spec, []
    if entry.kind != "generator":
        entry = registry.get(entry.generator or spec)
    gen, weights = _registry_generator(entry)
    return gen, weights, entry.name, _random_note(entry, weights)


def build_models(
    resolution: int | None = None, model: str | None = None, generator: str | None = None, with_generator: bool = True
) -> BenchModels:
    """The tokenizer (and generator) a benchmark runs, on the CPU in float32.

    `model`: registry name (default: `DEFAULT_MODELS[resolution]`), local folder or Hub id;
    `generator`: its generator when `model` is a folder or Hub id (registry tokenizers bring
    their paired one). A generator whose ids do not fit the tokenizer is dropped with a note.
    """
    name = model or default_model(resolution)
    entry = registry.find(name) if not os.path.exists(name) else None
    notes: list[Note] = []
    gen, gen_weights, gen_name = None, "pretrained", None
    if entry is not None:
        tok_entry = entry if entry.kind == "tokenizer" else registry.find(entry.tokenizer or "")
        if tok_entry is None:
            raise UsageError(f"{entry.name} is a generator without a paired tokenizer")
        tok, tok_weights = _registry_tokenizer(tok_entry)
        tok_name = tok_entry.name
        notes += _random_note(tok_entry, tok_weights)
        if generator is None and with_generator:
            gen_entry = entry if entry.kind == "generator" else registry.find(tok_entry.generator or "")
            if gen_entry is not None:
                gen, gen_weights = _registry_generator(gen_entry)
                gen_name = gen_entry.name
                notes += _random_note(gen_entry, gen_weights)
    else:
        from .loading import load_tokenizer

        tok, tok_weights, tok_name = load_tokenizer(name, device="cpu"), "pretrained", name
    if generator is not None and with_generator:
        gen, gen_weights, gen_name, more = _generator(generator)
        notes += more
    if gen is not None and (gen.codebook_size != tok.codebook_size or gen.num_tokens != tok.num_tokens):
        notes.append(Note("generator-mismatch", f"generator {gen_name} makes {gen.num_tokens} ids of "
                          f"{gen.codebook_size} codes but the tokenizer takes {tok.num_tokens} of "
                          f"{tok.codebook_size}: sample not measured"))  # fmt: skip
        gen = None
    elif with_generator and gen is None:
        notes.append(Note("no-generator", f"no generator paired with {tok_name}: sample not measured"))
    if resolution is not None and model is not None and tok.image_size != resolution:
        notes.append(Note("resolution-from-model", f"{tok_name} works at {tok.image_size}x{tok.image_size}: the "
                          f"resolution comes from the model, not the requested {resolution}"))  # fmt: skip
    tok_info = ModelInfo(tok_name, _count(tok), tok_weights)  # type: ignore[arg-type]
    gen_info = None if gen is None else ModelInfo(str(gen_name), _count(gen), gen_weights)  # type: ignore[arg-type]
    return BenchModels(tok, gen, tok_info, gen_info, notes)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["BenchModels", "DEFAULT_MODELS", "build_models", "default_model"]
