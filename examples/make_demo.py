"""Rebuild the README's demo and its transcripts from what the repository ships.

    python examples/make_demo.py                       # demo in /tmp/demo, transcripts in examples/transcripts.md
                                                       # and in README.md's <!-- demo: NAME --> blocks
    python examples/make_demo.py --out /tmp/d --transcripts /tmp/t.md --skip-slow

It lays out the golden tiny checkpoints of ../shared/golden as Hub repos `golden/<case>` in a
local Hugging Face cache (the layout huggingface_hub itself writes: blobs, snapshots, refs),
copies the photos of ../shared/images to `images/`, makes a `broken/` folder of odd files
from them (zero-byte, truncated JPEG, text named .png, 16-bit PNG, CMYK JPEG, plus one good
photo), then runs every command the README shows, offline, and writes each as `$ command`
followed by what it printed (stdout and stderr, in order) into one markdown file.

The commands run as `python -m titok_cli` from this checkout (shown as `titok`), so the
transcripts describe this source tree, not whatever `titok` is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CASES = ("tok_vq_legacy_tiny", "tok_vq_tiny", "tok_vae_tiny", "gen_vit_tiny", "gen_uvit_tiny")
MARKER = ".titok-demo"  # only a folder holding this file is ever deleted by a rerun
TOK, VAE, GEN = "golden/tok_vq_legacy_tiny", "golden/tok_vae_tiny", "golden/gen_vit_tiny"
INCEPTION = "feature-weights/pt_inception-2015-12-05-6726825d.pth"


def hub_cache(cache: Path, repo_id: str, folder: Path, files: tuple[str, ...]) -> Path:
    """Lay out `files` of `folder` as huggingface_hub's cache holds `repo_id` at `main`.

    The commit hash is the SHA-1 of the repo id (stable across runs); blobs are named by
    their SHA-256 and each snapshot entry is a relative symlink to its blob.
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    for sub in (repo_dir / "refs", repo_dir / "blobs", snapshot):
        sub.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name in files:
        data = (folder / name).read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snapshot


def broken_folder(dest: Path, photos: Path) -> None:
    """Odd inputs an encoder meets in real folders, each made from the shared photos."""
    dest.mkdir(parents=True)
    shutil.copy(photos / "chelsea.png", dest / "chelsea.png")  # one good photo
    (dest / "empty.jpg").write_bytes(b"")
    (dest / "notes.png").write_text("shopping list: milk, eggs\n")
    rocket = (photos / "rocket.jpg").read_bytes()
    (dest / "truncated.jpg").write_bytes(rocket[: len(rocket) // 2])
    with Image.open(photos / "camera.png") as camera:  # 8-bit grayscale -> the same picture in 16 bits
        import numpy as np

        wide = np.asarray(camera.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(wide).save(dest / "camera16.png")  # mode I;16
    with Image.open(photos / "coffee.png") as coffee:
        coffee.convert("RGB").convert("CMYK").save(dest / "cmyk.jpg", quality=90)


def build(out: Path, shared: Path) -> dict[str, Path]:
    """The demo folder: hf-cache/, images/, broken/, and examples/ (a link to this repo's)."""
    if out.exists():
        if not (out / MARKER).is_file() and any(out.iterdir()):
            raise SystemExit(f"{out} exists and was not made by this script; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by examples/make_demo.py; deleted and rebuilt by each run\n")
    snapshots = {}
    for case in CASES:
        snapshots[case] = hub_cache(out / "hf-cache", f"golden/{case}", shared / "golden" / case,
                                    ("config.json", "model.safetensors"))  # fmt: skip
    shutil.copytree(shared / "images", out / "images")
    broken_folder(out / "broken", shared / "images")
    class_folders(out / "classes", shared / "images")
    feature_weights(out / "feature-weights")
    reference_batch(out / "ref.npz", out / "classes")
    drawings(out / "drawings" / "train", 160, seed=1)
    drawings(out / "drawings" / "heldout", 8, seed=2)
    (out / "examples").symlink_to(ROOT / "examples")
    return snapshots


def class_folders(dest: Path, photos: Path) -> None:
    """ImageNet-style class folders (tench = 0, goldfish = 1), each photo also mirrored: a tiny labelled set."""
    files = sorted(p for p in photos.iterdir() if p.is_file())
    for i, path in enumerate(files):
        folder = dest / ("n01440764" if i % 2 == 0 else "n01443537")
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            rgb.save(folder / f"{path.stem}.png")
            rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"{path.stem}_flip.png")


def drawings(dest: Path, count: int, seed: int) -> None:
    """A domain unlike photos, for `titok finetune`: flat-coloured circles, boxes and triangles on
    plain backgrounds, 96 x 80 pixels, drawn with Pillow from a seeded generator."""
    import numpy as np
    from PIL import ImageDraw

    dest.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        im = Image.new("RGB", (96, 80), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(2, 6))):
            x, y = (int(v) for v in rng.integers(0, 80, 2))
            r = int(rng.integers(8, 30))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = int(rng.integers(0, 3))
            if shape == 0:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
            elif shape == 1:
                draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=fill)
            else:
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
        im.save(dest / f"drawing{i:04d}.png")


def _seeded_state(module, seed: int, nonnegative: bool = False) -> dict:
    """The module's state dict refilled with seeded random values of a sane scale (He-normal weights,
    positive BatchNorm variances): the demo's stand-in for weights it cannot download offline."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            out[key] = value
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        elif value.dim() == 1 and key.endswith(".weight"):  # normalisation scales
            out[key] = 1 + torch.randn(value.shape, generator=gen) * 0.1
        elif value.dim() == 1:
            out[key] = torch.randn(value.shape, generator=gen) * 0.01
        else:
            out[key] = torch.randn(value.shape, generator=gen) * (2.0 / value[0].numel()) ** 0.5
        if nonnegative:
            out[key] = out[key].abs()
    return out


def feature_weights(dest: Path) -> None:
    """Seeded random FID Inception and LPIPS weight files, under the names the cache would use."""
    import torch

    from titok_cli.quality.inception import FIDInceptionV3
    from titok_cli.quality.lpips import LPIPS

    dest.mkdir(parents=True)
    lpips = LPIPS()
    torch.save(_seeded_state(FIDInceptionV3(), 1), dest / "pt_inception-2015-12-05-6726825d.pth")
    torch.save(_seeded_state(lpips.backbone, 2), dest / "vgg16-397923af.pth")
    torch.save(_seeded_state(lpips.heads, 3, nonnegative=True), dest / "lpips-v0.1-vgg.pth")


def reference_batch(path: Path, photos: Path) -> None:
    """An ADM-format reference archive (`arr_0`, uint8 [N, 64, 64, 3]) of the class-folder photos."""
    import numpy as np

    from titok_cli.preprocess import load_image

    images = [np.asarray(load_image(p, 64)) for p in sorted(photos.rglob("*.png"))]
    np.savez(path, arr_0=np.stack(images))


def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """One shell command; `titok` means `python -m titok_cli` of this checkout."""
    argv = shlex.split(command)
    if argv[0] == "titok":
        argv = [sys.executable, "-m", "titok_cli", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def last_json_item(text: str) -> str:
    """A long JSON list shown as its last element, as the README does."""
    items = json.loads(text)
    body = json.dumps(items[-1], indent=2)
    return "[\n  ...\n" + "\n".join("  " + line for line in body.splitlines()) + "\n]\n"


def sections(snapshots: dict[str, Path], skip_slow: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    """(heading, [(command, note)]) in README order; a note follows the command as `# note`."""
    gen_snapshot = snapshots["gen_vit_tiny"].relative_to(snapshots["gen_vit_tiny"].parents[3])
    bench = [
        (f"titok bench --model {TOK} --generator {GEN} --device cpu", ""),
        (f"titok bench --model {TOK} --task encode --task decode --dtype bfloat16 --agreement images --device cpu", ""),
        (f"titok bench --model {TOK} --task encode --device cpu --json", ""),
    ]
    if not skip_slow:
        bench.insert(2, ("titok bench --resolution 512 --task encode --task decode -b 1 --iters 1 --warmup 0 "
                         "--device cpu", ""))  # fmt: skip
    return [
        ("Quick start", [
            (f"titok encode examples/images -o tokens.npy --model {TOK}", ""),
            ("titok decode tokens.npy -o decoded", ""),
            ("ls decoded", ""),
        ]),
        ("Help", [("titok --help", ""), ("titok encode --help", "")]),
        ("titok models", [("titok models", ""), ("titok models --json", "the last entry")]),
        ("titok download", [
            (f"titok download {TOK} {GEN}", ""),
            ("titok download", "offline, and titok-l32 is not in the cache"),
            ("titok download titok-l64-512", ""),
        ]),
        ("titok encode", [
            (f"titok encode examples/images -o out/tokens.npy --model {TOK}", ""),
            (f"titok encode broken -o out/broken.npz --model {TOK}", ""),
            (f"titok encode broken -o out/strict.npz --model {TOK} --strict", "nothing written"),
            (f"titok encode examples/images -o out/latents.npz --model {VAE} --json", ""),
            ("python -c \"import numpy as np; t = np.load('out/tokens.npy'); print(t.dtype, t.shape); print(t)\"", ""),
            ("cat {manifest:out/broken.npz}", ""),
        ]),
        ("titok decode", [
            ("titok decode out/tokens.npy -o out/decoded --grid out/sheet.png", ""),
            ("ls out/decoded", ""),
            (f"titok decode out/tokens.npy -o out/wrong --model {VAE}", ""),
        ]),
        ("titok sample", [
            (f"titok sample --class 3 -c 7 -n 4 -o samples --grid samples/grid.png --save-tokens samples/tokens.npy "
             f"--model {GEN} --tokenizer {TOK}", ""),
            ("ls samples", ""),
            (f'titok sample --class "golden retriever" --model {GEN} --tokenizer {TOK}', ""),
            (f"titok sample --all-classes -n 5 --npz fid.npz --model {GEN} --tokenizer {TOK}", ""),
        ]),  # fmt: skip
        ("titok bench", bench),
        ("titok info", [
            ("titok info out/tokens.npy", ""),
            ("titok info out/broken.npz", ""),
            ("titok info samples/tokens.npy", ""),
            (f"titok info {GEN}", "a Hub repo id: its snapshot in the local cache"),
            ("titok info titok-l32-gen", "a registry name whose weights are not cached"),
            (f"titok info {gen_snapshot}/model.safetensors --json", ""),
            ("titok info broken/notes.png", ""),
        ]),
        ("Evaluating", [
            (f"titok eval recon examples/images --model {TOK} --lpips feature-weights --inception {INCEPTION} "
             "-o out/recon.json", ""),
            (f"titok eval recon examples/images --model {TOK} -o out/recon-offline.json",
             "offline, and the weights are not in the cache"),
            (f"titok eval gen fid.npz --ref ref.npz --inception {INCEPTION} --expect 50", ""),
            (f"titok eval gen fid.npz --ref ref.npz --inception {INCEPTION} --expect 50000", ""),
            (f"titok eval sweep --model {GEN} --tokenizer {TOK} --ref ref.npz --guidance-scale 1,4 "
             f"--temperature 1,4.5 -c 0 -c 1 -n 2 --inception {INCEPTION} -o out/sweep", ""),
            ("ls out/sweep", ""),
        ]),
        ("titok train", [
            (f"titok encode classes -o out/classes.npz --model {TOK} --hflip", ""),
            (f"titok train out/classes.npz -o run --generator {GEN} --steps 60 -b 8 --checkpoint-every 20", ""),
            ("titok sample --model run/final --class 0 -n 4 -o trained", ""),
            ("titok info run/final", ""),
        ]),
        ("titok finetune", [
            (f"titok finetune drawings/train --heldout drawings/heldout -o ft --model {TOK} --steps 150 -b 8 "
             "--lr 1e-3 --perceptual lpips --lpips feature-weights --eval-every 50", ""),
            (f"python examples/finetune_compare.py drawings/heldout --before {TOK} --after ft/final "
             "-o examples/finetune_before_after.png", ""),
            ("titok info ft/final", ""),
        ]),
        ("Example scripts", [
            (f"python examples/roundtrip.py examples/images/chelsea.png --model {TOK} -o out/roundtrip.png", ""),
            (f"python examples/encode_folder.py examples/images -o out/folder.npz --model {TOK}", ""),
            (f"python examples/sample_class.py --class 3 -n 4 --model {GEN} --tokenizer {TOK} -o out/samples.png", ""),
        ]),
    ]  # fmt: skip


def manifest_of(token_file: str, cwd: Path) -> str:
    """The manifest beside a token file, whichever name this version writes."""
    base = Path(token_file)
    for candidate in (Path(f"{base}.manifest.jsonl"), base.with_name(base.stem + ".manifest.jsonl")):
        if (cwd / candidate).is_file():
            return str(candidate)
    return str(base.with_name(base.stem + ".manifest.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/demo"), help="demo folder (rebuilt on every run)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder holding golden/ and images/")
    parser.add_argument("--transcripts", type=Path, default=ROOT / "examples" / "transcripts.md")
    parser.add_argument("--columns", type=int, default=80, help="terminal width the commands see")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="also replace the README's `<!-- demo: NAME -->` blocks (--readme '' to skip)")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the 512x512 random-weights benchmark")
    args = parser.parse_args()
    if args.readme is not None and not str(args.readme).strip("."):
        args.readme = None

    out = args.out.resolve()
    snapshots = build(out, args.shared.resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "TITOK_DEBUG", "NO_COLOR", "FORCE_COLOR")}
    env.update(HF_HUB_CACHE=str(out / "hf-cache"), HF_HOME=str(out / "hf-home"), HF_HUB_OFFLINE="1", COLUMNS=str(args.columns),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))  # fmt: skip

    doc = io.StringIO()
    doc.write("<!-- made by examples/make_demo.py; rerun it instead of editing this file -->\n")
    doc.write(f"Demo folder `{out}`: Hugging Face cache `hf-cache/` (`HF_HUB_CACHE={out}/hf-cache "
              f"HF_HUB_OFFLINE=1`) holding the golden tiny checkpoints as `golden/<case>`, `images/` "
              f"(the photos of ../shared/images), `broken/` (odd files), `examples/` (this repo's); "
              f"COLUMNS={args.columns}.\n")  # fmt: skip
    blocks: dict[str, str] = {}
    for heading, commands in sections(snapshots, args.skip_slow):
        block = io.StringIO()
        block.write("```\n")
        for i, (command, note) in enumerate(commands):
            if command.startswith("cat {manifest:"):
                command = "cat " + manifest_of(command[len("cat {manifest:") : -1], out)
            code, text = run(command, out, env)
            if note == "the last entry" and code == 0:
                text = last_json_item(text)
            notes = [n for n in (note, f"exit code {code}" if code else "") if n]
            block.write(("\n" if i else "") + f"$ {command}" + (f"   # {'; '.join(notes)}" if notes else "") + "\n")
            lines = [line.rstrip() for line in text.splitlines()]  # rich pads help pages to the width
            while lines and not lines[-1]:
                lines.pop()
            block.write("".join(line + "\n" for line in lines))
            print(f"[{code}] {command}", file=sys.stderr)
        block.write("```\n")
        blocks[heading] = block.getvalue()
        doc.write(f"\n### {heading}\n\n{blocks[heading]}")
    args.transcripts.parent.mkdir(parents=True, exist_ok=True)
    args.transcripts.write_text(doc.getvalue(), encoding="utf-8")
    print(f"transcripts -> {args.transcripts}", file=sys.stderr)
    if args.readme is not None:
        args.readme.write_text(splice(args.readme.read_text(encoding="utf-8"), blocks), encoding="utf-8")
        print(f"README blocks -> {args.readme}", file=sys.stderr)


DEMO_BLOCK = re.compile(r"(<!-- demo: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- /demo -->)", re.S)


def splice(readme: str, blocks: dict[str, str]) -> str:
    """README text with every `<!-- demo: NAME -->...<!-- /demo -->` span replaced by section NAME."""

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in blocks:
            raise SystemExit(f"README names demo section {name!r}, which make_demo.py does not run")
        return m.group(1) + blocks[name] + m.group(4)

    return DEMO_BLOCK.sub(replace, readme)


if __name__ == "__main__":
    main()
