"""`titok download` against an offline Hugging Face cache (HF_HUB_OFFLINE=1, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from titok_cli.cli.app import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


def test_download_from_cache_prints_the_folder(hub_cache):
    result = run("download", "golden/tok_vq_tiny")
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.is_relative_to(hub_cache)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "model.safetensors" in result.stderr and "opens" in result.stderr  # verified, said on stderr


def test_quiet_prints_only_the_folders(hub_cache):
    result = run("download", "-q", "golden/tok_vq_legacy_tiny", "golden/gen_vit_tiny")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and result.stderr == ""
    assert "models--golden--tok_vq_legacy_tiny" in lines[0] and "models--golden--gen_vit_tiny" in lines[1]


def test_missing_repo_is_one_clear_error(hub_cache):
    result = run("download", "golden/does_not_exist")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: golden/does_not_exist/config.json is not in the local Hugging Face cache")
    assert "--model /path/to/folder" in error
    assert "Traceback" not in result.output


def test_default_is_l32_and_its_generator(hub_cache):
    # offline and not cached: the error names the default tokenizer's repo
    result = run("download")
    assert result.exit_code == 1
    assert "yucornetto/tokenizer_titok_l32_imagenet" in result.stderr


def test_default_downloads_both_when_cached(hub_cache, golden):
    from tests.conftest import make_hub_cache

    # stand-ins for the official repos (the registry only needs the files to exist and open)
    make_hub_cache(hub_cache, "yucornetto/tokenizer_titok_l32_imagenet", golden / "tok_vq_legacy_tiny",
                   ("config.json", "model.safetensors"))  # fmt: skip
    make_hub_cache(hub_cache, "yucornetto/generator_titok_l32_imagenet", golden / "gen_vit_tiny",
                   ("config.json", "model.safetensors"))  # fmt: skip
    result = run("download", "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [Path(x).parts[-3] for x in lines] == [
        "models--yucornetto--tokenizer_titok_l32_imagenet",
        "models--yucornetto--generator_titok_l32_imagenet",
    ]


def test_architecture_only_is_refused(hub_cache):
    result = run("download", "titok-l64-512")
    assert result.exit_code == 2  # UnknownModelError is a usage error
    assert "architecture only" in result.stderr and "no public weights" in result.stderr


def test_unknown_name_and_bad_combinations(hub_cache, tmp_path):
    assert run("download", "not-a-model").exit_code == 2
    both = run("download", "--all", "titok-l32")
    assert both.exit_code == 2 and "not both" in both.stderr
    local = run("download", str(tmp_path))
    assert local.exit_code == 2 and "local path" in local.stderr


def test_corrupt_cached_weights_are_reported(hub_cache, tmp_path):
    from tests.conftest import make_hub_cache

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model": {"vq_model": {}}}')
    (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    make_hub_cache(hub_cache, "golden/corrupt", bad)
    result = run("download", "golden/corrupt")
    assert result.exit_code == 1
    assert "not a readable safetensors file" in result.stderr


def test_local_dir_records_provenance(hub_cache, golden, tmp_path):
    import hashlib
    import json

    from tests.conftest import make_hub_cache

    make_hub_cache(hub_cache, "yucornetto/tokenizer_titok_b64_imagenet", golden / "tok_vq_legacy_tiny",
                   ("config.json", "model.safetensors"))  # fmt: skip
    result = run("download", "titok-b64", "--local-dir", tmp_path / "b64", "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "b64" / "titok.json").read_text())
    assert (doc["name"], doc["kind"], doc["repo"]) == ("titok-b64", "tokenizer", "yucornetto/tokenizer_titok_b64_imagenet")
    weights = (golden / "tok_vq_legacy_tiny" / "model.safetensors").read_bytes()
    assert doc["files"]["model.safetensors"] == {"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    import titok_cli

    assert titok_cli.load_tokenizer(tmp_path / "b64").source.entry.name == "titok-b64"


def test_one_file_of_a_repo(hub_cache, golden, tmp_path):
    from tests.conftest import make_hub_cache

    make_hub_cache(hub_cache, "fun-research/TiTok", golden / "tok_vq_legacy_tiny", ("pytorch_model.bin",))
    result = run("download", "fun-research/TiTok:pytorch_model.bin", "--local-dir", tmp_path / "legacy")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "legacy" / "pytorch_model.bin").is_file() and "opens" in result.stderr
    missing = run("download", "fun-research/TiTok:tokenizer_titok_l32.bin")
    assert missing.exit_code == 1
    assert "fun-research/TiTok/tokenizer_titok_l32.bin is not in the local Hugging Face cache" in missing.stderr


def test_repo_ids_are_checked_by_huggingface_hub(hub_cache):
    for bad in ("owner/na--me", "owner/name.git", "owner/.name"):
        result = run("download", bad)
        assert result.exit_code != 0 and "is not a known model or a Hub repo id" in result.stderr, bad
    close = run("download", "titok-l33")
    assert "did you mean titok-l32" in close.stderr
