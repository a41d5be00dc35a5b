"""Write weights/models.json from the table below, counting parameters with our own models.

Run from the repository root: `python weights/build_registry.py`. Facts come from
shared/spec/REFERENCE.md sections 1 and 8.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from titok_cli.models.generator import TiTokGenerator  # noqa: E402
from titok_cli.models.tokenizer import TiTokTokenizer  # noqa: E402


def tok(size_enc, size_dec, k, *, mode="vq", codebook=4096, token_size=12, l2=True, legacy=True, crop=256):
    vq = {
        "codebook_size": codebook, "token_size": token_size, "use_l2_norm": l2,
        "vit_enc_model_size": size_enc, "vit_dec_model_size": size_dec,
        "vit_enc_patch_size": 16, "vit_dec_patch_size": 16, "num_latent_tokens": k,
        "finetune_decoder": legacy, "quantize_mode": mode, "is_legacy": legacy,
    }  # fmt: skip
    if mode == "vae":
        del vq["codebook_size"], vq["use_l2_norm"]
    return {"model": {"vq_model": vq}, "dataset": {"preprocessing": {"crop_size": crop}}}


def gen(model_type, hidden, layers, heads, inner, k, *, steps, scale, temp, decay, crop=256):
    return {
        "model": {
            "vq_model": {"codebook_size": 4096, "num_latent_tokens": k},
            "generator": {
                "model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers,
                "num_attention_heads": heads, "intermediate_size": inner, "dropout": 0.1,
                "attn_drop": 0.1, "num_steps": steps, "class_label_dropout": 0.1,
                "image_seq_len": k, "condition_num_classes": 1000,
                "randomize_temperature": temp, "guidance_scale": scale, "guidance_decay": decay,
            },
        },
        "dataset": {"preprocessing": {"crop_size": crop}},
    }  # fmt: skip


def sampling(steps, scale, temp, decay, pow_=3.0):
    return {
        "num_steps": steps, "guidance_scale": scale, "guidance_decay": decay,
        "guidance_scale_pow": pow_, "randomize_temperature": temp,
        "softmax_temperature_annealing": True,
    }  # fmt: skip


L32 = sampling(8, 4.5, 9.5, "linear")
B64 = sampling(8, 3.0, 11.0, "linear")
S128 = sampling(64, 6.9, 2.8, "power-cosine")
HUB = "yucornetto/"

TOKENIZERS = [
    ("titok-l32", "tokenizer_titok_l32_imagenet", tok("large", "large", 32), "tokenizer_titok_l32.bin",
     "titok-l32-gen", {"rFID": 2.21}, "VQ, 32 tokens, two-stage (MaskGIT-VQGAN pixel decoder)"),
    ("titok-b64", "tokenizer_titok_b64_imagenet", tok("base", "base", 64), "tokenizer_titok_b64.bin",
     "titok-b64-gen", {"rFID": 1.70}, "VQ, 64 tokens, two-stage"),
    ("titok-s128", "tokenizer_titok_s128_imagenet", tok("small", "small", 128), "tokenizer_titok_s128.bin",
     "titok-s128-gen", {"rFID": 1.71}, "VQ, 128 tokens, two-stage"),
    ("titok-bl64-vq", "tokenizer_titok_bl64_vq8k_imagenet",
     tok("base", "large", 64, codebook=8192, token_size=64, l2=False, legacy=False), None, None,
     {"rFID": 2.06}, "VQ 8k codebook, 64 tokens, single-stage"),
    ("titok-bl128-vq", "tokenizer_titok_bl128_vq8k_imagenet",
     tok("base", "large", 128, codebook=8192, token_size=64, l2=False, legacy=False), None, None,
     {"rFID": 1.49}, "VQ 8k codebook, 128 tokens, single-stage"),
    ("titok-sl256-vq", "tokenizer_titok_sl256_vq8k_imagenet",
     tok("small", "large", 256, codebook=8192, token_size=64, l2=False, legacy=False), None, None,
     {"rFID": 1.03}, "VQ 8k codebook, 256 tokens, single-stage"),
    ("titok-ll32-vae", "tokenizer_titok_ll32_vae_c16_imagenet",
     tok("large", "large", 32, mode="vae", token_size=16, legacy=False), None, None,
     {"rFID": 1.61}, "VAE (continuous, 16 channels), 32 tokens"),
    ("titok-bl64-vae", "tokenizer_titok_bl64_vae_c16_imagenet",
     tok("base", "large", 64, mode="vae", token_size=16, legacy=False), None, None,
     {"rFID": 1.25}, "VAE (continuous, 16 channels), 64 tokens"),
    ("titok-bl128-vae", "tokenizer_titok_bl128_vae_c16_imagenet",
     tok("base", "large", 128, mode="vae", token_size=16, legacy=False), None, None,
     {"rFID": 0.84}, "VAE (continuous, 16 channels), 128 tokens"),
]  # fmt: skip

GENERATORS = [
    ("titok-l32-gen", "generator_titok_l32_imagenet", gen("ViT", 768, 24, 16, 3072, 32, steps=8, scale=4.5, temp=9.5, decay="linear"),
     "generator_titok_l32.bin", "titok-l32", L32, {"gFID": 2.77}, "BERT-style MaskGIT generator for titok-l32"),
    ("titok-b64-gen", "generator_titok_b64_imagenet", gen("ViT", 768, 24, 16, 3072, 64, steps=8, scale=3.0, temp=11.0, decay="linear"),
     "generator_titok_b64.bin", "titok-b64", B64, {"gFID": 2.48}, "BERT-style MaskGIT generator for titok-b64"),
    ("titok-s128-gen", "generator_titok_s128_imagenet", gen("UViT", 1024, 20, 16, 4096, 128, steps=64, scale=6.9, temp=2.8, decay="power-cosine"),
     "generator_titok_s128.bin", "titok-s128", S128, {"gFID": 1.97}, "UViT MaskGIT generator for titok-s128"),
]  # fmt: skip

ARCH_512 = [
    ("titok-l64-512", tok("large", "large", 64, crop=512), "titok-l64-512-gen", {"rFID": 1.77},
     gen("ViT", 768, 24, 16, 3072, 64, steps=8, scale=4.5, temp=9.5, decay="linear", crop=512), L32, {"gFID": 2.74}),
    ("titok-b128-512", tok("base", "base", 128, crop=512), "titok-b128-512-gen", {"rFID": 1.52},
     gen("ViT", 768, 24, 16, 3072, 128, steps=8, scale=3.0, temp=11.0, decay="linear", crop=512), B64, {"gFID": 2.49}),
]  # fmt: skip


def counts(model: torch.nn.Module) -> tuple[int, int]:
    sd = model.state_dict()
    return sum(t.numel() for t in sd.values()), len(sd)


def build() -> list[dict]:
    rows = []
    with torch.device("meta"):
        for name, repo, cfg, legacy, generator, metrics, desc in TOKENIZERS:
            n, keys = counts(TiTokTokenizer.from_config(cfg))
            rows.append(dict(name=name, kind="tokenizer", repo=HUB + repo, legacy_file=legacy, generator=generator,
                             config=cfg, num_parameters=n, num_state_dict_keys=keys, metrics=metrics, description=desc))
        for name, repo, cfg, legacy, tokenizer, samp, metrics, desc in GENERATORS:
            n, keys = counts(TiTokGenerator.from_config(cfg))
            rows.append(dict(name=name, kind="generator", repo=HUB + repo, legacy_file=legacy, tokenizer=tokenizer,
                             config=cfg, sampling=samp, num_parameters=n, num_state_dict_keys=keys, metrics=metrics,
                             description=desc))
        for name, tcfg, gname, tmetrics, gcfg, samp, gmetrics in ARCH_512:
            n, keys = counts(TiTokTokenizer.from_config(tcfg))
            rows.append(dict(name=name, kind="tokenizer", repo=None, generator=gname, config=tcfg, num_parameters=n,
                             num_state_dict_keys=keys, metrics=tmetrics, architecture_only=True, files=[],
                             description="paper's 512x512 tokenizer, architecture only (no public weights)"))
            n, keys = counts(TiTokGenerator.from_config(gcfg))
            rows.append(dict(name=gname, kind="generator", repo=None, tokenizer=name, config=gcfg, sampling=samp,
                             num_parameters=n, num_state_dict_keys=keys, metrics=gmetrics, architecture_only=True,
                             files=[], description="paper's 512x512 generator, architecture only (no public weights)"))
    return rows


if __name__ == "__main__":
    doc = {
        "about": "Known TiTok checkpoints; generated by weights/build_registry.py. Parameter counts "
        "are counted from the models built with these configs.",
        "legacy_repo": "fun-research/TiTok",
        "models": build(),
    }
    (ROOT / "weights" / "models.json").write_text(json.dumps(doc, indent=1) + "\n")
    for row in doc["models"]:
        print(f"{row['name']:22s} {row['num_parameters']:>12,d} params {row['num_state_dict_keys']:>5d} keys")
