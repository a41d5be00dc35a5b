"""`titok eval sweep`: sample + gFID over a 2x2 grid on the golden tiny models, resumable point by point.

Four images per grid point (classes 0-3, one each) against the seven test photos, with the seeded
random FID Inception of tests/eval_data.py: small enough for a shared CPU.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import titok_cli
import titok_cli.eval_gen as eval_gen_module
import titok_cli.sample_job as sample_job_module
from titok_cli.eval_sweep import SweepRequest, SweepResult, run_sweep
from titok_cli.sweep_grid import build_grid
from titok_cli.sweep_plot import PALETTE, plot_gfid
from titok_cli.sample_job import sample_to_npz

from .eval_data import write_photo_reference, write_random_inception
from .test_bad_inputs import titok

ROOT = Path(__file__).resolve().parents[1]
AXES = {"guidance_scale": ["1.5", "4"], "randomize_temperature": ["0", "3"]}


class Interrupt(KeyboardInterrupt):
    """Ctrl-C, raised from the progress callback in the middle of a grid point's sampling."""


def _request(golden: Path, root: Path, **changes) -> SweepRequest:
    values = dict(model=golden / "gen_vit_tiny", tokenizer=golden / "tok_vq_legacy_tiny", reference=root / "ref.npz",
                  axes=AXES, run_dir=root / "run", classes=(0, 1, 2, 3), per_class=1, seed=7,
                  inception=root / "inception.pth", batch_size=2, device="cpu")  # fmt: skip
    return SweepRequest(**{**values, **changes})


class Spy:
    """Counts calls of a module function (rendered batches, feature passes) while delegating to it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.calls = 0
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)


@pytest.fixture(scope="module")
def sweep(golden, images_dir, tmp_path_factory):
    """An interrupted sweep (Ctrl-C inside point 1's sampling), then the same command to completion."""
    root = tmp_path_factory.mktemp("sweep")
    write_random_inception(root / "inception.pth")
    write_photo_reference(images_dir, root / "ref.npz")
    request = _request(golden, root)
    current = {}

    def on_point(index, total, label, reused):
        current["index"] = index

    def interrupt(phase, done, total):
        if phase == "sampling" and current["index"] == 1 and done == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sweep(request, on_point=on_point, progress=interrupt)
    state = {"root": root, "request": request,
             "lines_after_interrupt": (root / "run" / "results.jsonl").read_text().splitlines(),
             "partials": sorted(p.name for p in (root / "run" / "points").glob("*/samples.npz.partial/batch-*.npy"))}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        renders = Spy(mp, sample_job_module, "render_batch")
        state["result"] = run_sweep(request)
        state["renders"] = renders.calls
    return state


def test_interrupted_sweep_resumes_where_it_stopped(sweep, golden):
    assert len(sweep["lines_after_interrupt"]) == 1  # point 0 was finished and recorded
    assert sweep["partials"] == ["batch-000000.npy"]  # point 1 had rendered one of its two batches
    result = sweep["result"]
    assert [row.reused for row in result.rows] == [True, False, False, False]
    assert sweep["renders"] == 1 + 2 + 2  # the missing batch of point 1, then points 2 and 3
    # the resumed point holds exactly the images of an uninterrupted run
    gen = titok_cli.load_generator(golden / "gen_vit_tiny")
    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")
    fresh = sweep["root"] / "fresh.npz"
    params = gen.sampling_params(guidance_scale=1.5, randomize_temperature=3.0)
    sample_to_npz(gen, tok, fresh, [0, 1, 2, 3], 1, params, batch_size=4, seed=7)
    with np.load(fresh) as a, np.load(result.rows[1].samples) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])


def test_grid_points_come_from_the_generators_settings(sweep, golden):
    gen = titok_cli.load_generator(golden / "gen_vit_tiny")
    base = gen.sampling_params()
    rows = sweep["result"].rows
    assert [row.settings for row in rows] == [
        {"guidance_scale": g, "randomize_temperature": t} for g in (1.5, 4.0) for t in (0.0, 3.0)
    ]
    for row in rows:
        assert row.sampling == base.override(**row.settings).to_dict()  # the other fields are the model's
    assert [p.params for p in build_grid(base, AXES)] == [base.override(**row.settings) for row in rows]


def test_tables_and_plot(sweep):
    result = sweep["result"]
    fids = [row.result.fid for row in result.rows]
    assert all(np.isfinite(fids)) and len(set(fids)) == 4  # four different settings, four numbers
    assert all(row.result.sample_count == 4 and row.result.reference_count == 7 for row in result.rows)
    table = list(csv.DictReader(io.StringIO(result.csv.read_text())))
    assert [float(r["gfid"]) for r in table] == fids
    assert [(float(r["guidance_scale"]), float(r["randomize_temperature"])) for r in table] == [
        (row.settings["guidance_scale"], row.settings["randomize_temperature"]) for row in result.rows]  # fmt: skip
    assert [float(r["precision"]) for r in table] == [row.result.precision for row in result.rows]
    doc = json.loads(result.json.read_text())
    assert doc["axes"] == ["guidance_scale", "randomize_temperature"]
    assert [r["gfid"] for r in doc["rows"]] == fids
    plot = Image.open(result.plot).convert("RGB")
    assert plot.size == (720, 460)
    colours = {c for _, c in plot.getcolors(1 << 20)}
    assert PALETTE[0] in colours and PALETTE[1] in colours and PALETTE[2] not in colours  # two lines


def test_deleted_point_is_measured_again_alone(sweep, monkeypatch):
    run = sweep["root"] / "run"
    before = sweep["result"]
    lines = (run / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["settings"] != before.rows[2].settings]
    assert len(kept) == 3
    (run / "results.jsonl").write_text("\n".join(kept) + "\n")
    renders = Spy(monkeypatch, sample_job_module, "render_batch")
    passes = Spy(monkeypatch, eval_gen_module.FeatureExtractor, "archive_features")
    after = run_sweep(sweep["request"])
    assert [row.reused for row in after.rows] == [True, True, False, True]
    assert renders.calls == 0  # its samples were complete: only the metrics are computed again
    assert passes.calls == 1  # the samples of that point; the reference features come from the run folder
    assert [row.result.as_json() for row in after.rows] == [row.result.as_json() for row in before.rows]
    assert len((run / "results.jsonl").read_text().splitlines()) == 4


def test_cli_reports_a_finished_run(sweep, golden, capsys):
    root = sweep["root"]
    args = ["eval", "sweep", "--model", golden / "gen_vit_tiny", "--tokenizer", golden / "tok_vq_legacy_tiny",
            "--ref", root / "ref.npz", "--guidance-scale", "1.5,4", "--temperature", "0,3", "--class", "0,1",
            "-c", "2", "--class", "3", "-n", 1, "--seed", 7, "--inception", root / "inception.pth", "-b", 2,
            "--device", "cpu", "-o", root / "run"]  # fmt: skip
    res = titok(capsys, *args, "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert [r["reused"] for r in doc["rows"]] == [True] * 4
    assert [r["gfid"] for r in doc["rows"]] == [row.result.fid for row in sweep["result"].rows]
    res = titok(capsys, *args)
    assert res.code == 0 and "guidance scale" in res.out and "reused" in res.out
    assert "4 grid points (4 from an earlier run)" in res.out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "nothing to sweep"),
        (["--guidance-scale", "2,x"], "--guidance-scale: 'x' is not a valid value"),
        (["--temperature", "6,-1"], "--temperature must be >= 0"),
        (["--guidance-scale", "2,2.0"], "--guidance-scale: a value is repeated"),
        (["--steps", "8,2.5"], "--steps: '2.5' is not a valid value"),
        (["--guidance-decay", "linear,cosine"], "--guidance-decay must be one of"),
        (["--annealing", "true,maybe"], "--annealing: 'maybe' is not a valid value"),
        (["--guidance-scale", "2,3", "-n", "3"], "1 class x 3 images per class is too few"),
    ],
)
def test_bad_grids_are_usage_errors(golden, tmp_path, capsys, flags, message):
    res = titok(capsys, "eval", "sweep", "--model", golden / "gen_vit_tiny", "--ref", tmp_path / "ref.npz",
                "--class", "0", "-o", tmp_path / "run", *flags)  # fmt: skip
    assert res.code == 2 and len(res.err_lines) == 1 and message in res.err, res.err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(sweep, golden, tmp_path):
    """Half the grid as `titok eval sweep`, alone and under torchrun (gloo): the same samples and numbers."""
    root = sweep["root"]
    # one thread per process in both runs, so float rounding is the same everywhere
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    args = ["eval", "sweep", "--model", str(golden / "gen_vit_tiny"), "--tokenizer", str(golden / "tok_vq_legacy_tiny"),
            "--ref", str(root / "ref.npz"), "--guidance-scale", "4", "--temperature", "0,3", "--class", "0,1,2,3",
            "-n", "1", "--seed", "7", "--inception", str(root / "inception.pth"), "-b", "2", "--device", "cpu",
            "--json", "-o"]  # fmt: skip
    docs = []
    for launcher, folder in ((["-m"], "one"), (["-m", "torch.distributed.run", "--nproc_per_node=2",
                                                "--master_port=29591", "-m"], "two")):  # fmt: skip
        res = subprocess.run([sys.executable, *launcher, "titok_cli", *args, str(tmp_path / folder)], env=env,
                             capture_output=True, text=True, timeout=900)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        docs.append(json.loads(res.stdout))  # rank 0 alone printed
    one, two = docs
    assert [r["settings"] for r in two["rows"]] == [r["settings"] for r in one["rows"]] == [
        {"guidance_scale": 4.0, "randomize_temperature": t} for t in (0.0, 3.0)]  # fmt: skip
    for a, b in zip(one["rows"], two["rows"], strict=True):
        with np.load(a["samples"]) as x, np.load(b["samples"]) as y:
            assert np.array_equal(x["arr_0"], y["arr_0"])
        assert b["gfid"] == pytest.approx(a["gfid"], rel=1e-6)
        assert b["inception_score"] == pytest.approx(a["inception_score"], rel=1e-6)
        assert (b["precision"], b["recall"], b["sample_count"]) == (a["precision"], a["recall"], 4)
    assert (tmp_path / "two" / "results.csv").is_file() and (tmp_path / "two" / "gfid.png").is_file()


def test_interrupted_cli_sweep_says_it_resumes(golden, tmp_path, capsys, monkeypatch):
    import titok_cli.eval_sweep as eval_sweep_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_sweep_module, "run_sweep", interrupted)
    monkeypatch.delenv("TITOK_DEBUG", raising=False)
    res = titok(capsys, "eval", "sweep", "--model", golden / "gen_vit_tiny", "--ref", tmp_path / "ref.npz",
                "--class", "0,1,2,3", "-n", 1, "--guidance-scale", "2,3", "-o", tmp_path / "run")  # fmt: skip
    assert res.code == 130 and res.err_lines == ["error: interrupted; rerun the same command to resume"]


def _rows(axes: dict[str, list], fid) -> SweepResult:
    from titok_cli.eval_gen import GenEvalResult
    from titok_cli.eval_sweep import SweepRow
    from titok_cli.sampling_params import SamplingParams

    base = SamplingParams(8, 3.0, "linear", 3.0, 4.5, True)
    rows = []
    for p in build_grid(base, axes):
        r = GenEvalResult(fid=fid(p.settings), inception_score=1.0, inception_score_std=0.0, precision=None,
                          recall=None, sample_count=4, reference_count=None, samples="s.npz", reference="r.npz",
                          reference_holds="statistics", reference_stats_from="file")  # fmt: skip
        rows.append(SweepRow(p.index, p.settings, p.params.to_dict(), "s.npz", r, reused=False))
    return SweepResult(rows, list(axes), Path("."), Path("a.csv"), Path("a.json"), Path("a.png"), "r.npz")


def test_plot_draws_one_line_per_combination_of_the_other_settings():

    def colours(result):
        found = {c for _, c in plot_gfid(result).getcolors(1 << 20)}
        return [c for c in PALETTE if c in found]

    # a text axis on x, no second axis: one line
    one = _rows({"guidance_decay": ["constant", "linear", "power-cosine"]}, lambda s: len(s["guidance_decay"]))
    assert colours(one) == PALETTE[:1]
    # three axes: x is the first, one line per (second, third) pair
    three = _rows({"guidance_scale": ["2", "3"], "randomize_temperature": ["1", "2"], "num_steps": ["4", "8", "16"]},
                  lambda s: s["guidance_scale"] * s["randomize_temperature"] + s["num_steps"])  # fmt: skip
    assert colours(three) == PALETTE[:6]
