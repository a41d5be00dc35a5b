"""`titok bench`: figures for people, valid JSON for machines, and an honest word about random weights."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from titok_cli.cli.app import app

FAST = ("--device", "cpu", "-b", "2", "--warmup", "0", "--iters", "1", "--no-peak")


def flat(text: str) -> str:
    """Typer's usage errors come in a box, wrapped: one line without the frame."""
    return " ".join(text.replace("│", " ").split())


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


def test_table_on_tiny_golden_models(golden):
    result = run("bench", "--model", golden / "tok_vq_legacy_tiny", "--generator", golden / "gen_vit_tiny", *FAST)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "images/s" in out and "tokens/s" in out and "peak MB" in out
    for task in ("encode", "decode", "sample"):
        row = next(line for line in out.splitlines() if line.startswith(f"{task} "))
        assert any(ch.isdigit() for ch in row)
    assert "64x64 pixels, batch 2, float32 on cpu" in out and "pretrained weights" in out
    assert "RANDOM" not in out
    assert "comes from the model" not in result.stderr  # --model without --resolution: the model's own size


def test_header_and_a_line_per_task_come_while_it_runs(golden, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run("bench", "--model", golden / "tok_vq_legacy_tiny", "--task", "encode", "--task", "decode", *FAST)
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    header = next(i for i, line in enumerate(err) if line.startswith("bench "))
    assert "threads (OMP_NUM_THREADS=1)" in err[header] and "warm-up" in err[header]
    plans = [i for i, line in enumerate(err) if "first call" in line]
    assert len(plans) == 2 and header < plans[0]  # the header first, then each task's plan
    assert [err[i].split(":")[0] for i in plans] == ["encode", "decode"]
    assert any(line.startswith("encode: ") and "images/s" in line for line in err)
    assert "threads" in result.stdout  # the table's header says which threads were used


def test_spread_is_in_the_table_and_the_json(golden):
    args = ("bench", "--model", golden / "tok_vq_legacy_tiny", "--task", "encode", "--device", "cpu", "-b", "1",
            "--warmup", "0", "--iters", "3", "--seconds", "1000", "--no-peak")  # fmt: skip
    table = run(*args)
    assert table.exit_code == 0, table.output
    assert "ms/batch" in table.stdout and "min-max ms" in table.stdout
    row = next(line for line in table.stdout.splitlines() if line.startswith("encode "))
    low, high = (float(v.replace(",", "")) for v in row.split()[4].split("-"))
    assert low <= float(row.split()[3].replace(",", "")) <= high and row.split()[5] == "3"
    data = json.loads(run(*args, "--json").stdout)["encode"]
    assert data["calls"] == 3 and data["latency_ms_min"] <= data["latency_ms"] <= data["latency_ms_max"]
    assert sorted(data["latency_ms_all"]) == [data["latency_ms_min"], data["latency_ms"], data["latency_ms_max"]]


def test_resolution_of_the_model_wins_and_says_so(golden):
    result = run("bench", "--model", golden / "tok_vq_legacy_tiny", "--resolution", "512", "--task", "encode", *FAST)
    assert result.exit_code == 0, result.output
    assert "64x64 pixels" in result.stdout
    assert "works at 64x64: the resolution comes from the model, not the requested 512" in result.stderr


def test_sample_without_generator_is_a_usage_error(golden):
    result = run("bench", "--model", golden / "tok_vq_legacy_tiny", "--task", "sample", *FAST)
    assert result.exit_code == 2
    assert "needs a generator" in result.stderr and "--generator" in result.stderr
    assert "images/s" not in result.stdout  # no empty table


@pytest.mark.slow
def test_gemm_peak_and_half_precision_agreement_on_real_photos(golden, images_dir):
    result = run("bench", "--model", golden / "tok_vq_legacy_tiny", "--task", "encode", "--task", "decode",
                 "--dtype", "bfloat16", "--agreement", images_dir, "--json", *FAST[:-1])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["matmul_peak_gflops"] == max(data["matmul_peak_gflops_by_route"].values()) > 0
    for task in ("encode", "decode"):
        row = data[task]
        assert row["share_of_matmul_peak"] == pytest.approx(row["gflops_per_s"] / data["matmul_peak_gflops"])
    agree = data["agreement_with_float32"]
    n_photos = sum(1 for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert agree["images"] == n_photos
    # tiny untrained model: a loose bound (tests/test_precision.py), but a broken half path fails it
    assert 0.85 <= agree["token_agreement"] < 1.0 and agree["decode_psnr_db"] > 15 and agree["nan_count"] == 0
    table = run("bench", "--model", golden / "tok_vq_legacy_tiny", "--task", "encode", "--dtype", "bfloat16",
                "--agreement", images_dir, *FAST[:-1])  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "of peak" in table.stdout and "GEMM peak" in table.stdout
    assert "bfloat16 against float32 on" in table.stdout and "token agreement" in table.stdout


def test_agreement_needs_images(golden, tmp_path):
    result = run("bench", "--model", golden / "tok_vq_tiny", "--task", "encode", "--dtype", "bfloat16",
                 "--agreement", tmp_path, *FAST)  # fmt: skip
    assert result.exit_code == 2 and "no images" in result.stderr


def test_json_is_valid(golden):
    result = run("bench", "--model", golden / "tok_vae_tiny", "--task", "encode", "--task", "decode", "--json", *FAST)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["weights"] == "pretrained" and data["device"] == "cpu" and data["resolution"] == 64
    assert data["notes"] == [] and data["threads"] >= 1 and "omp_num_threads" in data
    for task in ("encode", "decode"):
        assert data[task]["images_per_s"] > 0 and data[task]["tokens_per_s"] > 0 and data[task]["latency_ms"] > 0
    assert data.get("sample") is None
    assert data["tokenizer"]["num_parameters"] > 0


@pytest.mark.slow
def test_random_weights_are_announced(hub_cache):
    # titok-s128 (84M parameters) is not in the offline cache: random weights, encode only to stay quick
    result = run("bench", "--model", "titok-s128", "--task", "encode", "--device", "cpu", "-b", "1",
                 "--warmup", "0", "--iters", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.stdout and "random weights" in result.stdout
    assert "not in the local Hugging Face cache" in result.stderr
    assert "random weights: speed is representative" not in result.stderr  # the table says it once


def test_bad_flags(golden):
    bad = run("bench", "--resolution", "300")
    assert bad.exit_code == 2 and "'256', '512'" in flat(bad.stderr)
    task = run("bench", "--task", "train", "--model", golden / "tok_vq_tiny")
    assert task.exit_code == 2 and "'encode', 'decode', 'sample', 'generate'" in flat(task.stderr)
    budget = run("bench", "--seconds", "0", "--model", golden / "tok_vq_tiny")
    assert budget.exit_code == 2 and "--seconds" in flat(budget.stderr)
