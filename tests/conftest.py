"""Shared fixtures: the golden conformance data and test photos live in ../shared beside the repo."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

# No test may touch the network or the user's own Hugging Face cache: set both before
# huggingface_hub is imported (it reads them once). Subprocesses inherit them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="titok-test-hf-cache-")
atexit.register(shutil.rmtree, os.environ["HF_HUB_CACHE"], True)
os.environ.pop("HF_TOKEN", None)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
IMAGES = SHARED / "images"
TOKENIZER_CASES = ("tok_vq_legacy_tiny", "tok_vq_tiny", "tok_vae_tiny")
GENERATOR_CASES = ("gen_vit_tiny", "gen_uvit_tiny")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the golden data from ../shared are needed for this test")
    return path


@pytest.fixture(scope="session")
def golden() -> Path:
    return _need(GOLDEN)


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return _need(IMAGES)


def make_hub_cache(cache: Path, repo_id: str, folder: Path, files: tuple[str, ...] | None = None) -> str:
    """Lay out `folder`'s files as huggingface_hub's cache would hold `repo_id` at main.

    Returns the fake commit hash. Used with HF_HUB_CACHE=cache and HF_HUB_OFFLINE=1, so
    loading goes through huggingface_hub exactly as for a real download.
    """
    files = files or tuple(p.name for p in sorted(folder.iterdir()) if p.is_file())
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for name in files:
        data = (folder / name).read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            shutil.copyfile(folder / name, blob)
        link = snap / name
        if not link.exists():
            link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return commit


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, golden):
    """An offline Hub cache holding every golden case as repo `golden/<case>`."""
    cache = tmp_path / "hf_cache"
    for case in TOKENIZER_CASES + GENERATOR_CASES:
        make_hub_cache(cache, f"golden/{case}", golden / case, ("config.json", "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache), raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)
    return cache


def load_meta(case_dir: Path) -> dict:
    return json.loads((case_dir / "meta.json").read_text())


# -- legacy single-file checkpoints (issue 9.2) ---------------------------------------------------


def legacy_copy(case_dir: Path, folder: Path, name: str) -> Path:
    """A golden checkpoint's weights as a plain pickled state dict (what the official .bin files are)."""
    import torch
    from safetensors.torch import load_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    torch.save(load_file(case_dir / "model.safetensors"), target)
    return target


@pytest.fixture()
def tiny_preset(golden, monkeypatch):
    """A registry with two more rows: the golden tiny legacy tokenizer and the tiny ViT generator
    as presets, with official-style single-file names. Returns the tokenizer's entry."""
    from titok_cli import registry
    from titok_cli.config import read_config_file

    tok = registry.ModelEntry(
        name="titok-tiny-test", kind="tokenizer", repo=None, num_parameters=0, num_state_dict_keys=0,
        config=read_config_file(golden / "tok_vq_legacy_tiny" / "config.json"), legacy_file="tokenizer_titok_tiny.bin",
    )  # fmt: skip
    gen = registry.ModelEntry(
        name="titok-tiny-test-gen", kind="generator", repo=None, num_parameters=0, num_state_dict_keys=0,
        config=read_config_file(golden / "gen_vit_tiny" / "config.json"), legacy_file="generator_titok_tiny.bin",
        tokenizer=tok.name,
    )  # fmt: skip
    entries = {**registry._entries(), tok.name: tok, gen.name: gen}
    monkeypatch.setattr(registry, "_entries", lambda: entries)
    return tok

