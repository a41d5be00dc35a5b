"""Class-conditional MaskGIT generators over TiTok token ids.

Token space (V = codebook size, N = number of classes), shared by both architectures:
    0 .. V-1         image tokens
    V                the mask token
    V+1 .. V+N       class c is V+1+c (the condition token, prepended to the K image tokens)
    V+N+1            "no class": the unconditional branch of classifier-free guidance

Two architectures, as in the official release:
  * BertGenerator ("ViT"): a BERT encoder (post-norm, LayerNorm eps 1e-12, token-type row 0),
    keys `model.embeddings.*`, `model.encoder.layer.{i}.*`, `model.lm_head.*`.
  * UViTGenerator ("UViT"): pre-norm blocks with long skips, keys `embeddings`, `pos_embed`,
    `in_blocks`, `mid_block`, `out_blocks`, `norm`, `lm_head`.
Dropout: the BERT generator has the official hidden dropout (`dropout`: after the embeddings
and after each sublayer's dense, before its residual LayerNorm) and attention-probability dropout
(`attn_drop`), active only in train mode and holding no state (no state-dict keys). The official
UViT builds its blocks with dropout 0 whatever the config says, so ours has none either.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GeneratorConfig, generator_config_from_dict
from ..sampling_params import SamplingParams
from ..source import Source
from .layers import Linear, linear_gelu
from .uvit_blocks import UViTBlock


class TiTokGenerator(nn.Module):
    """Common interface: logits for partially masked ids, and MaskGIT sampling."""

    config: GeneratorConfig
    source: Source | None  # where the weights came from (set by loading)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | GeneratorConfig, source: Source | None = None) -> "TiTokGenerator":
        """Build with random weights from the official nested config dict (no I/O)."""
        if not isinstance(cfg, GeneratorConfig):
            cfg = generator_config_from_dict(cfg)
        model_cls = BertGenerator if cfg.model_type == "ViT" else UViTGenerator
        if cls is not TiTokGenerator and not issubclass(model_cls, cls):
            raise TypeError(f"{cls.__name__} cannot build model_type {cfg.model_type!r}")
        return model_cls(cfg, source)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def num_tokens(self) -> int:
        return self.config.image_seq_len

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def condition_tokens(self, classes: torch.Tensor, drop_class: bool) -> torch.Tensor:
        """Class ids [B] -> condition token ids [B] (the drop label when `drop_class`)."""
        classes = classes.to(self.device).long()
        n = self.config.condition_num_classes
        if classes.numel() and not classes.is_meta and (int(classes.min()) < 0 or int(classes.max()) >= n):
            bad = int(classes.min()) if int(classes.min()) < 0 else int(classes.max())
            raise ValueError(f"class id {bad} is outside this generator's classes 0..{n - 1}")
        if drop_class:
            return torch.full_like(classes, self.config.drop_label_id)
        return classes + (self.config.codebook_size + 1)

    def forward_tokens(self, ids: torch.Tensor, cond_tokens: torch.Tensor) -> torch.Tensor:
        """ids [B,K] (may hold the mask id) + condition tokens [B] -> logits [B,K,V] (model dtype)."""
        seq = torch.cat([cond_tokens.view(-1, 1), ids], dim=1)  # (B, 1+K)
        return self.backbone(seq)  # (B, K, V)

    def forward(self, ids: torch.Tensor, cond_tokens: torch.Tensor) -> torch.Tensor:
        """The training forward (what DistributedDataParallel wraps): `forward_tokens` with autograd;
        dropout is active in train mode. Condition tokens come from `condition_tokens` or the
        training objective's class-label dropout."""
        return self.forward_tokens(ids, cond_tokens)  # (B, K, V)

    def backbone(self, seq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.inference_mode()
    def logits(self, ids: torch.Tensor, classes: torch.Tensor, drop_class: bool = False) -> torch.Tensor:
        """Official forward with cond_drop_prob 0 (or 1 when `drop_class`) -> float32 [B,K,V]."""
        ids = ids.to(self.device).long()
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens:
            raise ValueError(f"ids must be [B,{self.num_tokens}], got {list(ids.shape)}")
        return self.forward_tokens(ids, self.condition_tokens(classes, drop_class)).float()

    def sampling_params(self, **overrides: Any) -> SamplingParams:
        """This generator's sampling settings (its config's, i.e. the registry's official ones
        for registry models), with the given fields replaced (None leaves a field as it is)."""
        return SamplingParams.from_config(self.config).override(**overrides)

    @torch.inference_mode()
    def generate(
        self,
        classes: torch.Tensor | None = None,
        *,
        params: SamplingParams | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_decay: str | None = None,
        guidance_scale_pow: float | None = None,
        randomize_temperature: float | None = None,
        softmax_temperature_annealing: bool | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        condition: torch.Tensor | None = None,
        num_sample_steps: int | None = None,
    ) -> torch.Tensor:
        """Class ids [B] -> int64 token ids [B,K].

        Settings: `params` (a SamplingParams) or this generator's own (`sampling_params()`),
        then any field given by keyword. Noise: `generator` draws the whole batch from one
        stream; `seeds` (one int per row, e.g. `titok_cli.seeds.image_seeds`) gives every row a
        generator of its own, so a row does not depend on its batch (what `titok sample` uses).

        Porting official code: `condition` is accepted for `classes` and `num_sample_steps` for
        `num_steps`, so `generate(condition=labels, guidance_scale=..., guidance_decay=...,
        guidance_scale_pow=..., randomize_temperature=..., softmax_temperature_annealing=...,
        num_sample_steps=...)` runs as written for the official generators.
        """
        from ..sampling import maskgit_generate

        if condition is not None:
            if classes is not None:
                raise TypeError("generate() got both classes and condition (its official name)")
            classes = condition
        if classes is None:
            raise TypeError("generate() needs the class ids (classes= or condition=)")
        if num_sample_steps is not None:
            if num_steps is not None:
                raise TypeError("generate() got both num_steps and num_sample_steps (its official name)")
            num_steps = num_sample_steps
        given = dict(num_steps=num_steps, guidance_scale=guidance_scale, guidance_decay=guidance_decay,
                     guidance_scale_pow=guidance_scale_pow, randomize_temperature=randomize_temperature,
                     softmax_temperature_annealing=softmax_temperature_annealing)  # fmt: skip
        settings = (params if params is not None else self.sampling_params()).override(**given)
        return maskgit_generate(self, classes, settings, generator=generator, seeds=seeds)


# ---------------------------------------------------------------------------------------
# BERT-style generator (official model_type "ViT")
# ---------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """Word + absolute position + token-type(0) embeddings, then LayerNorm."""

    def __init__(self, vocab: int, hidden: int, positions: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)  # identity in eval mode; no state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Checkpoints saved by older transformers carry the position_ids buffer: ignore it,
        # so even a plain strict load_state_dict accepts them.
        state_dict.pop(prefix + "position_ids", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        n = seq.shape[1]
        x = self.word_embeddings(seq)  # (B, L, H)
        x = x + self.token_type_embeddings.weight[0] + self.position_embeddings.weight[:n]  # (B, L, H)
        return self.dropout(self.LayerNorm(x))  # (B, L, H)


class BertSelfAttention(nn.Module):
    """Q, K, V projections and fused attention; `attn_drop` drops attention probabilities in train mode."""

    def __init__(self, hidden: int, heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.attn_drop = attn_drop
        self.query = Linear(hidden, hidden)
        self.key = Linear(hidden, hidden)
        self.value = Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        shape = (b, n, self.heads, h // self.heads)
        q = self.query(x).view(shape).transpose(1, 2)  # (B, A, L, D)
        k = self.key(x).view(shape).transpose(1, 2)  # (B, A, L, D)
        v = self.value(x).view(shape).transpose(1, 2)  # (B, A, L, D)
        p = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, A, L, D)
        return out.transpose(1, 2).reshape(b, n, h)  # (B, L, H)


class BertResidualNorm(nn.Module):
    """dense, dropout, then LayerNorm(out + residual): BERT's post-norm sublayer output."""

    def __init__(self, d_in: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dense = Linear(d_in, hidden)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)  # (B, L, H)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float = 0.0, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.self = BertSelfAttention(hidden, heads, attn_drop)
        self.output = BertResidualNorm(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = Linear(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_gelu(x, self.dense.weight, self.dense.bias)


class BertLayer(nn.Module):
    """Post-norm transformer layer with BERT's module names."""

    def __init__(self, hidden: int, heads: int, inner: int, dropout: float = 0.0, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.attention = BertAttention(hidden, heads, dropout, attn_drop)
        self.intermediate = BertIntermediate(hidden, inner)
        self.output = BertResidualNorm(inner, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)  # (B, L, H)
        return self.output(self.intermediate(x), x)  # (B, L, H)


class BertEncoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, inner: int, dropout: float = 0.0,
                 attn_drop: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(hidden, heads, inner, dropout, attn_drop) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class BertBackbone(nn.Module):
    """BERT without pooler, plus the token head the official code attaches as `model.lm_head`."""

    def __init__(self, c: GeneratorConfig) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(c.vocab_size, c.hidden_size, c.image_seq_len + 1, c.dropout)
        self.encoder = BertEncoder(c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size,
                                   c.dropout, c.attn_drop)  # fmt: skip
        self.lm_head = Linear(c.hidden_size, c.codebook_size)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embeddings(seq))  # (B, 1+K, H)
        return self.lm_head(x[:, 1:])  # (B, K, V)


class BertGenerator(TiTokGenerator):
    """The official "ViT" generator (ImageBert): a BERT encoder under the `model.` prefix."""

    def __init__(self, config: GeneratorConfig, source: Source | None = None) -> None:
        super().__init__()
        self.config, self.source = config, source
        self.model = BertBackbone(config)
        _init_weights(self)
        self.eval()

    def backbone(self, seq: torch.Tensor) -> torch.Tensor:
        return self.model(seq)


# ---------------------------------------------------------------------------------------
# UViT generator (official model_type "UViT")
# ---------------------------------------------------------------------------------------


class UViTGenerator(TiTokGenerator):
    """The official UViT generator (UViTBert): in-blocks, a mid-block, out-blocks with LIFO skips."""

    def __init__(self, config: GeneratorConfig, source: Source | None = None) -> None:
        super().__init__()
        self.config, self.source = config, source
        h, heads, inner = config.hidden_size, config.num_attention_heads, config.intermediate_size
        half = config.num_hidden_layers // 2
        self.embeddings = nn.Embedding(config.vocab_size, h)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.image_seq_len + 1, h))
        self.in_blocks = nn.ModuleList(UViTBlock(h, heads, inner) for _ in range(half))
        self.mid_block = UViTBlock(h, heads, inner)
        self.out_blocks = nn.ModuleList(UViTBlock(h, heads, inner, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(h)
        self.lm_head = Linear(h, config.codebook_size)
        _init_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.eval()

    def backbone(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(seq) + self.pos_embed[:, : seq.shape[1]]  # (B, 1+K, H)
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return self.lm_head(self.norm(x)[:, 1:])  # (B, K, V)


def _init_weights(model: nn.Module) -> None:
    """Small random init (truncated normal 0.02) so an untrained model behaves sanely in benchmarks."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.device.type != "meta":
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
