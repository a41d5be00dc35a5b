"""One source of truth for sampling settings (issue 10).

`titok bench`, `titok sample` (PNGs) and its FID job (`--npz`) must hand the MaskGIT loop the
same `SamplingParams` for the same generator: every field, the generator's own values, nothing
spelled anywhere else. The settings are caught where they are used, at `maskgit_generate`, so a
path that rebuilt them from its own defaults, or dropped a field, would show up here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields

import pytest
from typer.testing import CliRunner

import titok_cli
import titok_cli.sampling
from titok_cli import registry
from titok_cli.cli.app import app
from titok_cli.sampling_params import SamplingParams

from .conftest import make_hub_cache

TOKENIZER = "tok_vq_legacy_tiny"  # 256 codes, 8 tokens: decodes both golden generators
# every field away from the library defaults, so a path that spelled its own would differ
UNUSUAL = {"num_steps": 5, "guidance_scale": 2.25, "guidance_decay": "power-cosine", "guidance_scale_pow": 1.5,
           "randomize_temperature": 0.75, "softmax_temperature_annealing": True}  # fmt: skip


@pytest.fixture
def seen(monkeypatch) -> list[SamplingParams]:
    """The settings of every `maskgit_generate` call made while the test runs."""
    calls: list[SamplingParams] = []
    real = titok_cli.sampling.maskgit_generate

    def recording(model, classes, params, **kwargs):
        calls.append(params)
        return real(model, classes, params, **kwargs)

    monkeypatch.setattr(titok_cli.sampling, "maskgit_generate", recording)
    return calls


def run(*args) -> dict:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def three_paths(gen, tok, tmp_path, seen: list[SamplingParams]) -> dict[str, tuple[SamplingParams, dict]]:
    """Settings that reached generate, and those each command reports, for bench, sample and sample --npz."""
    tmp_path.mkdir(exist_ok=True)
    out = {}
    common = ("--device", "cpu", "--json")
    commands = {
        "bench": ("bench", "--model", tok, "--generator", gen, "--task", "generate", "--batch-size", 1,
                  "--warmup", 0, "--iters", 1, "--no-peak", *common),
        "sample": ("sample", "--model", gen, "--tokenizer", tok, "--class", 1, "-n", 2, "-o", tmp_path / "png",
                   *common),
        "npz": ("sample", "--model", gen, "--tokenizer", tok, "--class", 1, "-n", 2, "--npz", tmp_path / "f.npz",
                *common),
    }  # fmt: skip
    for name, args in commands.items():
        seen.clear()
        reported = run(*args)["sampling"]
        assert seen, f"{name} never reached generate"
        assert all(p == seen[0] for p in seen), name
        out[name] = (seen[0], reported)
    return out


def assert_one_setting(paths: dict[str, tuple[SamplingParams, dict]], expected: SamplingParams) -> None:
    for name, (used, reported) in paths.items():
        assert isinstance(used, SamplingParams), name
        assert used == expected, name
        assert {k: reported[k] for k in expected.to_dict()} == expected.to_dict(), name


@pytest.mark.parametrize("case", ["gen_vit_tiny", "gen_uvit_tiny"])
def test_bench_sample_and_fid_job_use_the_generators_own_settings(golden, tmp_path, seen, case):
    gen, tok = golden / case, golden / TOKENIZER
    expected = titok_cli.load_generator(gen).sampling_params()
    assert expected == SamplingParams.from_config(titok_cli.load_generator(gen).config)
    assert {f.name for f in fields(expected)} == set(UNUSUAL)  # guidance_scale_pow included
    assert_one_setting(three_paths(gen, tok, tmp_path, seen), expected)


def test_every_field_of_the_config_reaches_generate(golden, tmp_path, seen):
    folder = tmp_path / "gen"
    shutil.copytree(golden / "gen_vit_tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["generator"].update(UNUSUAL)
    (folder / "config.json").write_text(json.dumps(config))
    expected = SamplingParams(**UNUSUAL)
    assert titok_cli.load_generator(folder).sampling_params() == expected
    assert_one_setting(three_paths(folder, golden / TOKENIZER, tmp_path, seen), expected)


def test_flags_change_only_their_field_in_sample_and_the_fid_job(golden, tmp_path, seen):
    gen, tok = golden / "gen_uvit_tiny", golden / TOKENIZER
    expected = titok_cli.load_generator(gen).sampling_params().override(guidance_scale_pow=1.25, num_steps=3)
    for out in (("-o", tmp_path / "png"), ("--npz", tmp_path / "f.npz")):
        seen.clear()
        run("sample", "-m", gen, "--tokenizer", tok, "-c", 0, "-n", 1, "--device", "cpu", "--json",
            "--guidance-scale-pow", 1.25, "--steps", 3, *out)  # fmt: skip
        assert seen and all(p == expected for p in seen), out[0]


def test_registry_name_and_its_downloaded_folder_get_the_official_settings(golden, hub_cache, tmp_path, seen):
    """The golden tiny generator stands in for titok-b64-gen in the Hub cache (as in test_loading)."""
    make_hub_cache(hub_cache, registry.get("titok-b64-gen").repo, golden / "gen_vit_tiny", ("config.json", "model.safetensors"))
    folder = tmp_path / "D"
    result = CliRunner().invoke(app, ["download", "titok-b64-gen", "--local-dir", str(folder), "-q"])
    assert result.exit_code == 0, result.output
    official = SamplingParams(**registry.get("titok-b64-gen").sampling)
    own = titok_cli.load_generator(golden / "gen_vit_tiny").sampling_params()
    assert official != own  # the golden config alone would give other settings
    tok = golden / TOKENIZER
    by_name = three_paths("titok-b64-gen", tok, tmp_path / "name", seen)
    by_folder = three_paths(folder, tok, tmp_path / "folder", seen)
    assert_one_setting(by_name, official)
    assert_one_setting(by_folder, official)
