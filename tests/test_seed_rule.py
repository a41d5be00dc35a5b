"""One seed, one picture: image j of class c depends only on (seed, c, j) and the settings.

Run on both golden generators with the tokenizer that decodes their ids (tok_vq_legacy_tiny:
256 codes, 8 tokens) and a nonzero temperature, so the noise decides the pictures. The fourth
equality (1 rank == 2 ranks) is tests/test_sample_job.py::test_torchrun_matches_single_process.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import titok_cli
from titok_cli.cli.app import app
from titok_cli.seeds import class_indices, image_seed, image_seeds

GENERATORS = ("gen_vit_tiny", "gen_uvit_tiny")
TEMPERATURE = "4.5"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def pair(gen: str) -> tuple[str, ...]:
    return ("--model", f"golden/{gen}", "--tokenizer", "golden/tok_vq_legacy_tiny", "--device", "cpu",
            "--temperature", TEMPERATURE)  # fmt: skip


def pngs(folder) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.iterdir()):
        with Image.open(path) as im:
            out[path.stem] = np.asarray(im)
    return out


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


def test_image_seed_is_the_documented_mix():
    digest = hashlib.sha256(b"titok-sample:7:3:2").digest()
    assert image_seed(7, 3, 2) == int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
    assert class_indices([3, 3, 5, 3]) == [0, 1, 0, 2]
    assert image_seeds(7, [3, 3, 5, 3])[3] == image_seed(7, 3, 2)
    assert len({image_seed(0, c, j) for c in range(10) for j in range(10)}) == 100


@pytest.mark.parametrize("gen", GENERATORS)
def test_generate_rows_do_not_depend_on_their_batch(golden, gen):
    model = titok_cli.load_generator(golden / gen)
    params = model.sampling_params(randomize_temperature=float(TEMPERATURE), guidance_decay="linear")
    labels = [1, 1, 4, 7, 4]
    seeds = image_seeds(3, labels)
    batch = model.generate(torch.tensor(labels), params=params, seeds=seeds)
    alone = torch.cat([model.generate(torch.tensor([c]), params=params, seeds=[s]) for c, s in zip(labels, seeds)])
    assert torch.equal(batch, alone)
    assert len({tuple(row) for row in batch.tolist()}) == len(labels)  # the noise matters at this temperature
    other = model.generate(torch.tensor(labels), params=params, seeds=image_seeds(4, labels))
    assert not torch.equal(batch, other)


@pytest.mark.parametrize("gen", GENERATORS)
def test_png_npz_batch_size_and_count_agree(hub_cache, tmp_path, gen):
    common = ("-c", "1", "-c", "4", "--seed", "11", *pair(gen))
    a = run("sample", *common, "-n", "3", "-b", "1", "-o", tmp_path / "b1", "--json")
    assert a.exit_code == 0, a.output
    assert json.loads(a.stdout)["sampling"]["randomize_temperature"] == float(TEMPERATURE)
    b = run("sample", *common, "-n", "3", "-b", "3", "-o", tmp_path / "b3")
    more = run("sample", *common, "-n", "5", "-b", "4", "-o", tmp_path / "n5")
    npz = run("sample", *common, "-n", "3", "-b", "2", "--npz", tmp_path / "s.npz")
    assert b.exit_code == 0 and more.exit_code == 0 and npz.exit_code == 0, b.output + more.output + npz.output

    one, five = pngs(tmp_path / "b1"), pngs(tmp_path / "n5")
    assert sorted(one) == [f"class{c}_{j:03d}" for c in (1, 4) for j in range(3)]
    assert len({img.tobytes() for img in one.values()}) == 6  # six different pictures
    for name in one:  # batch size 1 == batch size 3, and image j unchanged when -n grows
        assert (tmp_path / "b1" / f"{name}.png").read_bytes() == (tmp_path / "b3" / f"{name}.png").read_bytes()
        assert np.array_equal(one[name], five[name])
    with np.load(tmp_path / "s.npz") as f:  # PNG == npz, row for row
        assert f["labels"].tolist() == [1, 1, 1, 4, 4, 4]
        for row, name in enumerate(sorted(one)):
            assert np.array_equal(f["arr_0"][row], one[name])

    other = run("sample", "-c", "1", "-n", "1", "--seed", "12", "-o", tmp_path / "s12", *pair(gen))
    assert other.exit_code == 0
    assert not np.array_equal(pngs(tmp_path / "s12")["class1_000"], one["class1_000"])


def test_png_path_and_fid_job_get_one_settings_object(hub_cache, tmp_path, monkeypatch):
    """Sampling defaults live in one place: every path hands the sampler the same SamplingParams."""
    from titok_cli import sampling

    seen = []
    original = sampling.maskgit_generate

    def spy(model, classes, params, generator=None, seeds=None):
        seen.append(params)
        return original(model, classes, params, generator=generator, seeds=seeds)

    monkeypatch.setattr(sampling, "maskgit_generate", spy)
    args = ("-c", "2", "-n", "2", "--model", "golden/gen_uvit_tiny", "--tokenizer", "golden/tok_vq_legacy_tiny",
            "--device", "cpu")  # fmt: skip
    assert run("sample", *args, "-o", tmp_path / "p").exit_code == 0
    png_calls = len(seen)
    assert run("sample", *args, "--npz", tmp_path / "f.npz").exit_code == 0
    gen = titok_cli.load_generator("golden/gen_uvit_tiny")
    assert 0 < png_calls < len(seen)
    assert all(p == gen.sampling_params() for p in seen)
    assert gen.sampling_params() == titok_cli.SamplingParams.from_config(gen.config)
    assert gen.sampling_params().num_steps == 12  # the generator's own config.json, not a default elsewhere


def official_style_sample_fn(generator, tokenizer, labels, guidance_scale=3.0, guidance_decay="constant",
                             guidance_scale_pow=3.0, randomize_temperature=2.0, softmax_temperature_annealing=False,
                             num_sample_steps=8):  # fmt: skip
    """Written in the shape of the official demo's sampling helper (its keyword names), not copied."""
    generator.eval()
    tokenizer.eval()
    tokens = generator.generate(
        condition=torch.LongTensor(labels),
        guidance_scale=guidance_scale,
        guidance_decay=guidance_decay,
        guidance_scale_pow=guidance_scale_pow,
        randomize_temperature=randomize_temperature,
        softmax_temperature_annealing=softmax_temperature_annealing,
        num_sample_steps=num_sample_steps,
    )
    images = torch.clamp(tokenizer.decode(tokens.view(tokens.shape[0], -1)), 0.0, 1.0)
    return tokens, (images * 255.0).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()


@pytest.mark.parametrize("gen", GENERATORS)
def test_official_keyword_names(golden, gen):
    from safetensors.torch import load_file

    from .conftest import load_meta

    model = titok_cli.load_generator(golden / gen)
    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")
    io, meta = load_file(golden / gen / "io.safetensors"), load_meta(golden / gen)
    for mode, case in meta["sampling"].items():
        args = {k: v for k, v in case["args"].items() if k != "condition"}
        tokens, images = official_style_sample_fn(model, tok, io["condition"].tolist(), **args)
        assert torch.equal(tokens, io[mode]), mode  # the official outputs, through the official names
        assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    with pytest.raises(TypeError, match="num_sample_steps"):
        model.generate(io["condition"], num_steps=2, num_sample_steps=3)
    with pytest.raises(TypeError, match="condition"):
        model.generate(io["condition"], condition=io["condition"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--steps", "0"), "error: --steps must be >= 1, not 0"),
        (("--guidance-scale", "nan"), "error: --guidance-scale must be a finite number, not nan"),
        (("--guidance-scale-pow", "inf"), "error: --guidance-scale-pow must be a finite number, not inf"),
        (("--temperature", "-1"), "error: --temperature must be >= 0, not -1.0"),
        (("--guidance-decay", "cosine"),
         "error: --guidance-decay must be one of constant, linear, power-cosine, not 'cosine'"),
        (("-n", "0"), "error: --num must be >= 1, not 0"),
    ],
)
def test_bad_sampling_flags_are_one_line_usage_errors(hub_cache, tmp_path, flags, message):
    result = run("sample", "-c", "1", *flags, "-o", tmp_path / "out", "--model", "golden/gen_vit_tiny",
                 "--tokenizer", "golden/tok_vq_legacy_tiny", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


def test_output_must_be_a_folder(hub_cache, tmp_path):
    args = ("-c", "1", "--model", "golden/gen_vit_tiny", "--tokenizer", "golden/tok_vq_legacy_tiny", "--device", "cpu")
    png = run("sample", *args, "-o", tmp_path / "x.png")
    assert png.exit_code == 2 and len(png.stderr.strip().splitlines()) == 1
    assert "-o is the folder the PNG files go in" in png.stderr and "--grid" in png.stderr
    assert not (tmp_path / "x.png").exists()
    (tmp_path / "taken").write_text("a file")
    taken = run("sample", *args, "-o", tmp_path / "taken")
    assert taken.exit_code == 2 and "is a file" in taken.stderr


def test_sampling_params_api(golden):
    from titok_cli.errors import ConfigError, UsageError

    gen = titok_cli.load_generator(golden / "gen_vit_tiny")
    base = gen.sampling_params()
    assert base.override(num_steps=None, guidance_scale=None) is base
    changed = base.override(num_steps=4, guidance_scale=2)
    assert (changed.num_steps, changed.guidance_scale, changed.guidance_decay) == (4, 2.0, base.guidance_decay)
    assert changed.to_dict()["guidance_scale"] == 2.0 and isinstance(changed.guidance_scale, float)
    with pytest.raises(UsageError, match="--steps"):
        base.override(num_steps=0)
    with pytest.raises(TypeError, match="steps"):
        base.override(steps=4)
    with pytest.raises(ConfigError, match="num_steps"):
        titok_cli.SamplingParams.from_config(titok_cli.config.replace(gen.config, num_steps=0))
