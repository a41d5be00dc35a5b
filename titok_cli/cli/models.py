"""`titok models`: the known checkpoints, and whether each is in the local Hugging Face cache."""

from __future__ import annotations

from typing import Any

from .common import HelpOpt, JsonOpt, human_count, out_console, print_json


def _cached(repo: str | None, revision: str | None) -> bool:
    """True when the weights file of `repo` is in the local Hugging Face cache (no network)."""
    if repo is None:
        return False
    from huggingface_hub import try_to_load_from_cache

    from titok_cli.hub import WEIGHT_FILES

    for filename in WEIGHT_FILES:
        if isinstance(try_to_load_from_cache(repo, filename, revision=revision), str):
            return True
    return False


def model_rows() -> list[dict[str, Any]]:
    """One JSON-ready dict per registry entry."""
    from titok_cli import registry

    rows = []
    for entry in registry.all_entries():
        if entry.kind == "tokenizer":
            tcfg = entry.tokenizer_config
            tokens, codebook = tcfg.num_latent_tokens, tcfg.codebook_size
            paired = entry.generator
            kind = "tokenizer (VAE)" if tcfg.is_vae else "tokenizer (VQ)"
        else:
            gcfg = entry.generator_config
            tokens, codebook = gcfg.image_seq_len, gcfg.codebook_size
            paired = entry.tokenizer
            kind = f"generator ({gcfg.model_type})"
        rows.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "type": kind,
                "resolution": entry.image_size,
                "tokens": tokens,
                "codebook": codebook,
                "parameters": entry.num_parameters,
                "repo": entry.repo,
                "revision": entry.revision,
                "paired_with": paired,
                "cached": _cached(entry.repo, entry.revision),
                "architecture_only": entry.architecture_only,
                "metrics": dict(entry.metrics),
                "description": entry.description,
            }
        )
    return rows


_SHORT_KIND = {"tokenizer (VQ)": "tok VQ", "tokenizer (VAE)": "tok VAE"}
WIDE = 120  # from this terminal width on, the Hub repo column is shown too


def models(json_output: JsonOpt = False, _help: HelpOpt = False) -> None:
    """List every known TiTok checkpoint: kind, resolution, tokens, codebook, size, cached locally?

    On terminals at least 120 columns wide the Hub repo is shown too (always in --json).
    Architecture-only entries (the paper's 512x512 models, cached "-") have no public weights;
    `titok bench` runs them with random weights.

    Example:  titok models --json
    """
    rows = model_rows()
    if json_output:
        print_json(rows)
        return
    from rich.table import Table

    console = out_console()
    wide = console.width >= WIDE
    table = Table()
    columns = [("name", "left"), ("kind", "left"), ("res", "right"), ("tokens", "right"), ("codes", "right"),
               ("params", "right"), ("cached", "left")] + ([("Hub repo", "left")] if wide else [])  # fmt: skip
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    for row in rows:
        kind = _SHORT_KIND.get(row["type"], row["type"].replace("generator (", "gen ").rstrip(")"))
        cached = "-" if row["architecture_only"] else ("yes" if row["cached"] else "no")
        cells = [row["name"], kind, str(row["resolution"]), str(row["tokens"]),
                 "-" if row["codebook"] is None else str(row["codebook"]), human_count(row["parameters"]), cached]  # fmt: skip
        table.add_row(*cells, *([row["repo"] or "architecture only (no weights)"] if wide else []))
    console.print(table)
