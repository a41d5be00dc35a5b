"""Typed model configs, and the official nested config.json as a file format only.

The official checkpoints store their training config (an OmegaConf dump) next to the
weights. We read the few keys that decide the architecture into frozen dataclasses and
never pass the nested dict around.
"""

from __future__ import annotations

import json
import re
from collections import ChainMap
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

# name -> (width, layers, heads); "tiny" exists only for conformance tests.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 4),
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of a TiTok tokenizer (encoder, quantizer, decoder, optional pixel decoder)."""

    image_size: int = 256
    num_latent_tokens: int = 32
    token_size: int = 12
    codebook_size: int | None = 4096  # None for VAE models
    use_l2_norm: bool = True
    quantize_mode: str = "vq"  # "vq" or "vae"
    is_legacy: bool = True
    finetune_decoder: bool = True  # two-stage: proxy codes -> MaskGIT-VQGAN pixel decoder
    vit_enc_model_size: str = "large"
    vit_dec_model_size: str = "large"
    vit_enc_patch_size: int = 16
    vit_dec_patch_size: int = 16
    pixel_hidden_channels: int = 128
    commitment_cost: float = 0.25

    def __post_init__(self) -> None:
        for key in ("vit_enc_model_size", "vit_dec_model_size"):
            if getattr(self, key) not in VIT_SIZES:
                raise ConfigError(
                    f"{key} {getattr(self, key)!r} is not one of {', '.join(VIT_SIZES)}"
                )
        if self.quantize_mode not in ("vq", "vae"):
            raise ConfigError(f"quantize_mode {self.quantize_mode!r} is not 'vq' or 'vae'")
        if self.quantize_mode == "vq" and not self.codebook_size:
            raise ConfigError("a VQ tokenizer needs model.vq_model.codebook_size")
        for key in ("vit_enc_patch_size", "vit_dec_patch_size"):
            if self.image_size % getattr(self, key):
                raise ConfigError(
                    f"image size {self.image_size} is not a multiple of {key} {getattr(self, key)}"
                )
        if self.finetune_decoder and self.image_size // self.vit_dec_patch_size * 16 != self.image_size:
            raise ConfigError("two-stage decoding needs a decoder patch size of 16 (x16 pixel decoder)")

    @property
    def is_vae(self) -> bool:
        return self.quantize_mode == "vae"

    @property
    def grid_size(self) -> int:
        return self.image_size // self.vit_enc_patch_size

    def to_official(self) -> dict[str, Any]:
        """The nested config.json layout the official code reads."""
        vq = {k: v for k, v in asdict(self).items() if k != "image_size"}
        if self.is_vae:
            vq.pop("codebook_size")
        return {"model": {"vq_model": vq}, "dataset": {"preprocessing": {"crop_size": self.image_size}}}


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a MaskGIT generator over TiTok tokens, plus its sampling defaults."""

    model_type: str = "ViT"  # "ViT" (BERT-style, post-norm) or "UViT"
    codebook_size: int = 4096  # V; id V is the mask token
    image_seq_len: int = 32  # K
    condition_num_classes: int = 1000
    hidden_size: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 3072
    dropout: float = 0.1
    attn_drop: float = 0.1
    class_label_dropout: float = 0.1
    num_steps: int = 8
    guidance_scale: float = 3.0
    guidance_decay: str = "constant"
    guidance_scale_pow: float = 3.0
    randomize_temperature: float = 4.5
    softmax_temperature_annealing: bool = False
    image_size: int = 256

    def __post_init__(self) -> None:
        if self.model_type not in ("ViT", "UViT"):
            raise ConfigError(f"generator model_type {self.model_type!r} is not 'ViT' or 'UViT'")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError("generator hidden_size is not a multiple of num_attention_heads")
        if self.guidance_decay not in GUIDANCE_DECAYS:
            raise ConfigError(f"guidance_decay {self.guidance_decay!r} is not one of {GUIDANCE_DECAYS}")
        for key in ("dropout", "attn_drop", "class_label_dropout"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"generator {key} {getattr(self, key)} is not a probability in [0, 1]")

    SAMPLING_KEYS = ("num_steps", "guidance_scale", "guidance_decay", "guidance_scale_pow",
                     "randomize_temperature", "softmax_temperature_annealing")  # fmt: skip

    def sampling_defaults(self) -> dict[str, Any]:
        """This generator's default arguments for `generate` (SamplingParams fields)."""
        return {k: getattr(self, k) for k in self.SAMPLING_KEYS}

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + self.condition_num_classes + 2

    @property
    def drop_label_id(self) -> int:
        return self.codebook_size + self.condition_num_classes + 1

    def to_official(self) -> dict[str, Any]:
        gen = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("codebook_size", "image_size", "guidance_scale_pow", "softmax_temperature_annealing")
        }
        return {
            "model": {
                "vq_model": {"codebook_size": self.codebook_size, "num_latent_tokens": self.image_seq_len},
                "generator": gen,
            },
            "dataset": {"preprocessing": {"crop_size": self.image_size}},
        }


_REF = re.compile(r"\$\{([^}]+)\}")
_Path = tuple  # a node's location: keys (and list indices) from the document root


def _node_at(doc: Any, path: tuple, ref: str) -> Any:
    node = doc
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ConfigError(f"config.json: reference ${{{ref}}} points to nothing")
    return node


def _target(ref: str, holder: _Path) -> _Path:
    """Where `${ref}` points. Absolute `a.b`; relative as in OmegaConf: the first dot is the node
    holding the value (`${.x}`: a sibling key), each further dot one level up (`${..x}`)."""
    if ":" in ref:
        raise ConfigError(f"config.json: resolver ${{{ref}}} is not supported (only references to keys)")
    if not ref.startswith("."):
        return tuple(p for p in ref.split(".") if p)
    dots = len(ref) - len(ref.lstrip("."))
    if dots - 1 > len(holder):
        raise ConfigError(f"config.json: reference ${{{ref}}} climbs above the document root")
    base = holder[: len(holder) - (dots - 1)]
    return base + tuple(p for p in ref[dots:].split(".") if p)


def _resolve(doc: Mapping[str, Any], value: Any, where: _Path, seen: tuple = ()) -> Any:
    """`value`, found at `where`, with every `${...}` in it (and below it) resolved."""
    if isinstance(value, Mapping):
        return {k: _resolve(doc, v, where + (k,), seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(doc, v, where + (str(i),), seen) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(ref: str) -> Any:
        target = _target(ref.strip(), where[:-1])
        if target in seen:
            raise ConfigError(f"config.json: circular reference ${{{ref.strip()}}}")
        return _resolve(doc, _node_at(doc, target, ref.strip()), target, seen + (target,))

    whole = _REF.fullmatch(value.strip())
    if whole:
        return lookup(whole.group(1))
    return _REF.sub(lambda m: str(lookup(m.group(1))), value)


def resolve_interpolations(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve every OmegaConf-style `${a.b.c}` / `${.x}` / `${..x}` in the document (strict).

    Loading does not need this: it resolves only the keys it reads (`read_section`), so a
    dangling reference in a key we never read (`experiment.output_dir`) does no harm.
    """
    return _resolve(doc, dict(doc), ())


class Section(Mapping):
    """A mapping of the document read lazily: a value's interpolations resolve when it is read."""

    def __init__(self, doc: Mapping[str, Any], path: tuple, node: Mapping[str, Any]) -> None:
        self._doc, self._path, self._node = doc, path, node

    def __getitem__(self, key: str) -> Any:
        return _resolve(self._doc, self._node[key], self._path + (key,))

    def __iter__(self):
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)


def read_section(doc: Mapping[str, Any], *path: str) -> Section:
    """The mapping at `path` (empty when absent); values resolve their `${...}` when read."""
    node: Any = doc
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return Section(doc, tuple(path), {})
    if not isinstance(node, Mapping):
        raise ConfigError(f"config.json: {'.'.join(path)} is not a mapping")
    return Section(doc, tuple(path), node)


_section = read_section


# Sizes a config may ask for, checked before any tensor is built: the largest official model is
# far inside these, and a hostile config.json (hidden size 10**9, negative token counts) is refused.
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "image_size": (16, 4096),
    "num_latent_tokens": (1, 4096),
    "image_seq_len": (1, 4096),
    "token_size": (1, 4096),
    "codebook_size": (1, 1 << 20),
    "vit_enc_patch_size": (1, 256),
    "vit_dec_patch_size": (1, 256),
    "pixel_hidden_channels": (1, 2048),
    "condition_num_classes": (1, 1 << 20),
    "hidden_size": (1, 16384),
    "num_hidden_layers": (1, 256),
    "num_attention_heads": (1, 256),
    "intermediate_size": (1, 65536),
}


def _typed(cls: type, values: Mapping[str, Any]) -> Any:
    """Build a dataclass from known keys, checking simple types (int/float/bool/str)."""
    kwargs: dict[str, Any] = {}
    for f in cls.__dataclass_fields__.values():  # type: ignore[attr-defined]
        if f.name not in values or values[f.name] is None:
            continue
        value = values[f.name]
        default = f.default
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError
            elif isinstance(default, int) or f.name == "codebook_size":
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise TypeError
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            elif isinstance(default, str):
                value = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config.json: {f.name} = {value!r} has the wrong type") from None
        limits = SIZE_LIMITS.get(f.name)
        if limits is not None and not limits[0] <= value <= limits[1]:
            raise ConfigError(f"config.json: {f.name} = {value!r} is out of range ({limits[0]} to {limits[1]:,})")
        kwargs[f.name] = value
    return cls(**kwargs)


def has_tokenizer(doc: Mapping[str, Any]) -> bool:
    vq = _section(doc, "model", "vq_model")
    return "vit_enc_model_size" in vq or "token_size" in vq


def has_generator(doc: Mapping[str, Any]) -> bool:
    return bool(_section(doc, "model", "generator"))


def tokenizer_config_from_dict(doc: Mapping[str, Any]) -> TokenizerConfig:
    """Read the official nested config (model.vq_model + dataset.preprocessing.crop_size)."""
    vq = _section(doc, "model", "vq_model")
    if not vq:
        raise ConfigError("config.json has no model.vq_model section: not a TiTok tokenizer config")
    crop = _section(doc, "dataset", "preprocessing").get("crop_size", 256)
    cfg = _typed(TokenizerConfig, ChainMap({"image_size": crop}, vq))
    return replace(cfg, codebook_size=None) if cfg.is_vae else cfg  # continuous latents: no codebook


def generator_config_from_dict(doc: Mapping[str, Any]) -> GeneratorConfig:
    """Read the official nested config (model.generator + model.vq_model.codebook_size)."""
    gen = _section(doc, "model", "generator")
    if not gen:
        raise ConfigError("config.json has no model.generator section: not a TiTok generator config")
    vq = _section(doc, "model", "vq_model")
    values: dict[str, Any] = {"image_size": _section(doc, "dataset", "preprocessing").get("crop_size", 256)}
    if "codebook_size" in vq:
        values["codebook_size"] = vq["codebook_size"]
    if "image_seq_len" not in gen and "num_latent_tokens" in vq:
        values["image_seq_len"] = vq["num_latent_tokens"]
    return _typed(GeneratorConfig, ChainMap(values, gen))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Load config.json with errors that name the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return doc


__all__ = [
    "VIT_SIZES",
    "TokenizerConfig",
    "GeneratorConfig",
    "resolve_interpolations",
    "tokenizer_config_from_dict",
    "generator_config_from_dict",
    "read_config_file",
    "has_tokenizer",
    "has_generator",
    "replace",
    "field",
]
