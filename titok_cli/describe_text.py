"""`titok info`'s text: the dict of `describe.describe` as (label, value) lines for people."""

from __future__ import annotations

from typing import Any


def summary(desc: dict[str, Any]) -> list[tuple[str, str]]:
    """`describe`'s dict as (label, value) lines for a terminal."""
    return _token_lines(desc) if desc["kind"] == "tokens" else _checkpoint_lines(desc)


def _arch_text(a: dict[str, Any]) -> str:
    """`VQ tokenizer, 8 tokens, codebook 256, 64x64 px, ...` from `architecture`'s dict."""
    size = f"{a['image_size']}x{a['image_size']} px"
    if a["kind"] == "generator":
        return (f"{a['model_type']} generator, {a['tokens']} tokens, codebook {a['codebook_size']}, "
                f"{a['classes']} classes, {size}; {a['layers']} layers, width {a['hidden_size']}, "
                f"{a['heads']} heads, MLP {a['mlp_size']}")  # fmt: skip
    codes = f"codebook {a['codebook_size']}" if a["codebook_size"] else f"{a['token_size']} channels"
    stages = "two-stage (pixel decoder)" if a["two_stage"] else "single-stage"
    return (f"{a['quantize_mode'].upper()} tokenizer, {a['tokens']} tokens, {codes}, {size}; encoder "
            f"{a['encoder']}, decoder {a['decoder']}, {stages}" + (", legacy layout" if a["legacy_layout"] else ""))


def _sampling_text(s: dict[str, Any]) -> str:
    guidance = f"guidance {s['guidance_scale']:g} ({s['guidance_decay']}"
    guidance += f", pow {s['guidance_scale_pow']:g})" if s["guidance_decay"] == "power-cosine" else ")"
    annealing = "on" if s["softmax_temperature_annealing"] else "off"
    return (f"{s['num_steps']} steps, {guidance}, temperature {s['randomize_temperature']:g}, "
            f"annealing {annealing}")  # fmt: skip


def _model_text(m: dict[str, Any]) -> str:
    parts = [str(m.get("quantize_mode", "?")).upper()]
    if m.get("num_tokens") is not None:
        parts.append(f"{m['num_tokens']} tokens")
    if m.get("codebook_size"):
        parts.append(f"codebook {m['codebook_size']}")
    if m.get("image_size"):
        parts.append(f"{m['image_size']}x{m['image_size']} px")
    return f"{m.get('name') or m.get('repo') or m.get('local_path')} ({', '.join(parts)})"


def _token_lines(d: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [("token file", d["path"]), ("manifest", d["manifest"] or "none (no model, names or failures recorded)"),
             ("content", f"{d['content']}, {d['dtype']} {d['shape']}"), ("rows", str(d["rows"]))]  # fmt: skip
    if "id_range" in d:
        lines.append(("ids", "{} .. {}".format(*d["id_range"])))
    if "value_range" in d:
        lines.append(("values", "{:.4g} .. {:.4g}".format(*d["value_range"])))
    model = d.get("model")
    lines.append(("model", _model_text(model) if model else "not recorded (pass --model to decode)"))
    if d.get("generator"):
        lines.append(("generator", str(d["generator"].get("name"))))
    if d.get("sampling"):
        lines.append(("sampling", _sampling_text(d["sampling"]) + (f", seed {d['sampling']['seed']}"
                                                                    if "seed" in d["sampling"] else "")))  # fmt: skip
    names = d["names"]
    if names["count"]:
        lines.append(("names", f"{names['first']} .. {names['last']}" if names["count"] > 1 else names["first"]))
    labels = d["labels"]
    if labels:
        top = ", ".join(f"{c} ({n})" for c, n in labels["most_common"])
        lines.append(("labels", f"{labels['labelled_rows']} rows, {labels['classes']} classes; most common {top}"))
    else:
        lines.append(("labels", "none"))
    failures = d["failures"]
    lines.append(("failed", str(len(failures))))
    lines += [("", f"{f['path']}: {f['reason']}") for f in failures[:10]]
    if len(failures) > 10:
        lines.append(("", f"... and {len(failures) - 10} more (--json lists all)"))
    return lines


def _checkpoint_lines(d: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [("checkpoint", d["path"])]
    arch = d.get("architecture")
    lines.append(("architecture", _arch_text(arch) if arch else "unknown (no config.json, not a registry size)"))
    if arch and arch.get("from"):
        lines.append(("", arch["from"]))
    w = d.get("weights")
    if w:
        lines.append(("parameters", f"{w['parameters']:,} in {w['tensors']} tensors ({', '.join(w['dtypes'])})"))
        lines.append(("weights", f"{w['file']} ({w['bytes']:,} bytes, {w['format']})"))
    elif d.get("parameters_from_registry"):
        lines.append(("parameters", f"{d['parameters_from_registry']:,} (registry)"))
        lines.append(("weights", "not in the local cache (`titok download` fetches them)"
                      if d["provenance"].get("repo") else "none: architecture only"))  # fmt: skip
    else:
        lines.append(("weights", "none beside the config"))
    s = d.get("sampling")
    if s:
        lines.append(("sampling", f"{_sampling_text(s)}; from {s['source']}"))
    prov = d["provenance"]
    known = [f"{label} {prov[key]}" for key, label in (("registry_name", "registry"), ("repo", "Hub repo"),
                                                         ("revision", "revision")) if prov.get(key)]  # fmt: skip
    lines.append(("provenance", "; ".join(known + [prov["how"]])))
    t = d.get("training")
    if t:
        lines.append(("trained", t["trained_with"] + (f", {t['steps']:,} steps" if t.get("steps") else "")))
        if t.get("tokenizer"):  # titok train: the tokenizer whose token files it learned
            lines.append(("tokenizer", _model_text(t["tokenizer"])))
        if t.get("finetuned_from"):  # titok finetune: the starting checkpoint and what moved
            start = t["finetuned_from"]
            lines.append(("fine-tuned", f"from {start.get('model') if isinstance(start, dict) else start}"))
            if t.get("trained_parts"):
                frozen = ", ".join(t.get("frozen_parts") or ["nothing"])
                lines.append(("", f"trained {', '.join(t['trained_parts'])}; frozen {frozen}"))
    return lines
