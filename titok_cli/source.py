"""Where a model's weights came from: the `Source` every loaded model carries as `model.source`.

Models get it by construction (`TiTokTokenizer(cfg, source=...)`); `load_tokenizer` /
`load_generator` fill it in. It also decides which sampling settings a generator uses: the
official ones when the weights are recognised as a registry checkpoint (by name, Hub repo,
the provenance file `titok download --local-dir` writes, a Hub-cache folder, or an identical
architecture), otherwise the config's own values plus the documented defaults.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from . import registry
from .config import GeneratorConfig, generator_config_from_dict, tokenizer_config_from_dict
from .errors import ConfigError

PROVENANCE_FILE = "titok.json"  # written beside config.json by `titok download --local-dir`
PROVENANCE_FORMAT = 1


@dataclass(frozen=True)
class Source:
    """Provenance of a loaded model (plain data; `describe()` is what manifests record)."""

    kind: str  # "tokenizer" or "generator"
    weights: Path | None = None  # None: built with random weights
    entry: registry.ModelEntry | None = None  # the registry checkpoint these weights are, if known
    repo: str | None = None  # Hub repo the files came from
    revision: str | None = None
    filename: str | None = None  # the weights file inside `repo` (for `repo:file`)
    local_path: str | None = None  # the folder or file given
    preset: str | None = None  # registry preset that supplied the architecture of a lone file
    recognised_by: str | None = None  # how `entry` was found: name, repo, provenance, hub-cache, config
    sampling_origin: str | None = None  # generators: "registry" (official settings) or "config"
    trained_for: str | None = None  # generators trained by `titok train`: the tokenizer their config records

    @property
    def name(self) -> str:
        if self.entry is not None:
            return self.entry.name
        return self.repo or self.local_path or "unknown"

    @property
    def sampling_note(self) -> str | None:
        """One line for the CLI when a generator's sampling settings are not the official ones."""
        if self.kind != "generator" or self.sampling_origin != "config":
            return None
        return (f"{self.name}: no official sampling settings are known for these weights; using the "
                "values in its config.json and the documented defaults (override them with flags)")  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (token-file manifests, --json output); `preset` only when one was used."""
        out = {
            "name": self.name,
            "repo": self.repo,
            "revision": self.revision,
            "local_path": self.local_path,
            "weights": str(self.weights) if self.weights else None,
        }
        return out | ({"preset": self.preset} if self.preset else {})


# -- recognising registry checkpoints ------------------------------------------------------------


def _architecture(config: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    try:
        if kind == "tokenizer":
            return asdict(tokenizer_config_from_dict(config))
        arch = asdict(generator_config_from_dict(config))
    except ConfigError:
        return None
    for key in GeneratorConfig.SAMPLING_KEYS:
        arch.pop(key, None)
    return arch


def recognise(config: Mapping[str, Any], kind: str) -> registry.ModelEntry | None:
    """The registry checkpoint of `kind` whose architecture equals `config`'s (sampling settings
    aside), preferring ones with public weights; None when none or several different ones match."""
    mine = _architecture(config, kind)
    if mine is None:
        return None
    same = [e for e in registry.all_entries() if e.kind == kind and _architecture(e.config, kind) == mine]
    published = [e for e in same if not e.architecture_only] or same
    if len({json.dumps(e.sampling, sort_keys=True) for e in published}) == 1:
        return published[0]
    return None


_CACHE_FOLDER = re.compile(r"^models--(?P<owner>[^/]+?)--(?P<name>[^/]+)$")


def repo_of_cache_folder(folder: Path) -> str | None:
    """`.../models--owner--name/snapshots/<commit>` (huggingface_hub's cache layout) -> owner/name."""
    parts = folder.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots":
        m = _CACHE_FOLDER.match(parts[-3])
        if m:
            return f"{m['owner']}/{m['name']}"
    return None


# -- the provenance file ---------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_provenance(folder: Path, repo: str, revision: str | None, files: list[Path],
                     entry: registry.ModelEntry | None) -> Path:  # fmt: skip
    """Record beside the downloaded files which checkpoint they are (`titok.json`)."""
    doc = {
        "format": PROVENANCE_FORMAT,
        "name": entry.name if entry else None,
        "kind": entry.kind if entry else None,
        "repo": repo,
        "revision": revision,
        "files": {p.name: {"size": p.stat().st_size, "sha256": sha256_of(p)} for p in files},
    }
    path = folder / PROVENANCE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_provenance(folder: Path, weights: Path, kind: str) -> tuple[registry.ModelEntry | None, dict[str, Any]]:
    """The registry entry a provenance file names, if it applies to these weights (same file size)
    and to this kind of model; (None, {}) when there is no usable file."""
    path = folder / PROVENANCE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, {}
    if not isinstance(doc, dict):
        return None, {}
    recorded = (doc.get("files") or {}).get(weights.name) or {}
    if not isinstance(recorded, dict) or recorded.get("size") != weights.stat().st_size:
        return None, {}  # the weights were replaced since the download
    entry = registry.find(str(doc.get("name") or "")) or registry.find(str(doc.get("repo") or ""))
    if entry is not None and entry.kind != kind:
        entry = None
    return entry, doc

