"""Distribution metrics on FID Inception outputs: FID, Inception Score, precision/recall.

Each follows one reference definition, so that numbers are comparable with published ones:
  * FID: pytorch-fid / ADM. Statistics are the float64 mean and the N-1 covariance (numpy.cov) of
    pool3 features; the distance is |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2). The trace
    of the matrix square root is taken without scipy: the eigenvalues of S1^1/2 S2 S1^1/2 (both
    symmetric, so `eigh` in float64) are those of S1 S2, and their square roots sum to it. This is
    exact for singular covariances too (fewer images than 2048), where scipy's sqrtm warns.
  * Inception Score: torch-fidelity's `isc` (softmax of the logits WITHOUT fc bias, in float64;
    10 splits at i*N//10; rows shuffled first by numpy RandomState(2020).permutation). With
    `shuffle_seed=None` and N = 10 * 5000 it is also ADM's evaluator (10 chunks of 5000, in order).
  * Precision/recall: ADM's evaluator (Kynkäänniemi et al. 2019): the radius of each point is its
    squared distance to the 3rd nearest other point of its own set; precision is the share of
    samples inside some reference ball, recall the share of references inside some sample ball.
    Distances are squared Euclidean, |u|^2 - 2 u.v + |v|^2 clamped at 0, in float32 (ADM tries
    float16 first and falls back to this; we always use float32), computed in row x column blocks.
Streaming: `FeatureStatsAccumulator` holds the sum, the sum of outer products and the count in
float64; shards merge by adding them (`merge`, or `all_reduce` over torch.distributed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IS_SPLITS = 10  # torch-fidelity's default and ADM's 50 000 / 5000
IS_SHUFFLE_SEED = 2020  # torch-fidelity's default rng_seed
PR_NEIGHBOURS = 3  # ADM's nhood_sizes=(3,)
PR_BATCH = 10_000  # ADM's row/column batch size
FID_EPS = 1e-6  # pytorch-fid's diagonal offset, used only if the eigensolver fails


# -- FID ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a feature set, in float64; `count` is None when read from a file."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    count: int | None = None

    def frechet_distance(self, other: FeatureStats) -> float:
        """FID between this set and `other`."""
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)


def feature_stats(features: torch.Tensor | np.ndarray) -> FeatureStats:
    """Statistics of a whole feature set (N, D), exactly as numpy.mean / numpy.cov (float64, N-1)."""
    x = torch.as_tensor(np.asarray(features) if isinstance(features, np.ndarray) else features)
    acc = FeatureStatsAccumulator(x.shape[1], device=x.device)
    acc.update(x)
    return acc.stats()


class FeatureStatsAccumulator:
    """Running sum, sum of outer products and count (float64) of feature batches; mergeable."""

    def __init__(self, dim: int = 2048, device: torch.device | str = "cpu") -> None:
        self.dim = dim
        self.total = torch.zeros(dim, dtype=torch.float64, device=device)  # (D,)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # (D, D)
        self.count = torch.zeros((), dtype=torch.float64, device=device)  # number of rows

    def update(self, features: torch.Tensor) -> None:
        """Add a batch of features (N, D) (any float dtype, any device: moved to ours)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (N, {self.dim}), got {tuple(features.shape)}")
        x = features.to(device=self.total.device, dtype=torch.float64)  # (N, D)
        self.total += x.sum(dim=0)  # (D,)
        self.outer += x.t() @ x  # (D, D)
        self.count += x.shape[0]

    def merge(self, other: FeatureStatsAccumulator) -> None:
        """Add another shard's sums into this one."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of {other.dim} features into {self.dim}")
        self.total += other.total.to(self.total.device)
        self.outer += other.outer.to(self.outer.device)
        self.count += other.count.to(self.count.device)

    def all_reduce(self, group: object | None = None) -> None:
        """Sum the shards of every rank in place (torch.distributed must be initialised).

        The tensors must live where the backend wants them (CPU for gloo, the rank's GPU for nccl).
        """
        import torch.distributed as dist

        for t in (self.total, self.outer, self.count):
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sums, for saving a partial result (resume) or sending it elsewhere."""
        return {"total": self.total.cpu(), "outer": self.outer.cpu(), "count": self.count.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the sums by saved ones (shapes must match)."""
        if tuple(state["total"].shape) != (self.dim,) or tuple(state["outer"].shape) != (self.dim, self.dim):
            raise ValueError(f"saved statistics are not for {self.dim} features")
        device = self.total.device
        self.total = state["total"].to(device=device, dtype=torch.float64).clone()
        self.outer = state["outer"].to(device=device, dtype=torch.float64).clone()
        self.count = state["count"].to(device=device, dtype=torch.float64).clone().reshape(())

    def stats(self) -> FeatureStats:
        """Mean and N-1 covariance; needs at least two rows."""
        n = int(self.count.item())
        if n < 2:
            raise ValueError(f"a covariance needs at least 2 feature rows, got {n}")
        mu = self.total / n  # (D,)
        sigma = (self.outer - n * torch.outer(mu, mu)) / (n - 1)  # (D, D)
        sigma = (sigma + sigma.t()) / 2  # exact symmetry for eigh
        return FeatureStats(mu.cpu().numpy(), sigma.cpu().numpy(), n)


def _trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """tr((S1 S2)^1/2) for symmetric positive semi-definite S1, S2 (float64).

    S1 = V diag(w) V^T; the nonzero eigenvalues of S1 S2 are those of the r x r matrix
    diag(w_r)^1/2 V_r^T S2 V_r diag(w_r)^1/2 over the r directions where w > 0, so a rank-deficient
    S1 costs only a small second eigendecomposition. Round-off negatives are clipped to 0.
    """
    w, v = torch.linalg.eigh(s1)  # (D,), (D, D)
    keep = w > w.abs().max() * w.shape[0] * torch.finfo(w.dtype).eps
    half = v[:, keep] * w[keep].sqrt()  # (D, r)
    inner = half.t() @ s2 @ half  # (r, r)
    eig = torch.linalg.eigvalsh((inner + inner.t()) / 2)  # (r,)
    return eig.clamp(min=0).sqrt().sum()


def frechet_distance(mu1: np.ndarray | torch.Tensor, sigma1: np.ndarray | torch.Tensor,
                     mu2: np.ndarray | torch.Tensor, sigma2: np.ndarray | torch.Tensor,
                     device: torch.device | str = "cpu") -> float:  # fmt: skip
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    `device` may be a GPU: the two eigendecompositions of (D, D) matrices are the whole cost.
    """
    m1, m2, s1, s2 = (torch.as_tensor(np.asarray(a) if isinstance(a, np.ndarray) else a)
                      .to(device=device, dtype=torch.float64) for a in (mu1, mu2, sigma1, sigma2))  # fmt: skip
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"means must be vectors of one length, got {tuple(m1.shape)} and {tuple(m2.shape)}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}), got {tuple(s1.shape)} and {tuple(s2.shape)}")
    if not all(torch.isfinite(t).all() for t in (m1, m2, s1, s2)):
        raise ValueError("statistics contain NaN or infinity")
    s1, s2 = (s1 + s1.t()) / 2, (s2 + s2.t()) / 2
    try:
        tr_sqrt = _trace_sqrt_product(s1, s2)
    except torch.linalg.LinAlgError:  # did not converge: pytorch-fid's remedy, a tiny ridge
        ridge = torch.eye(d, dtype=torch.float64, device=s1.device) * FID_EPS
        tr_sqrt = _trace_sqrt_product(s1 + ridge, s2 + ridge)
    diff = m1 - m2  # (D,)
    return float(diff @ diff + s1.trace() + s2.trace() - 2 * tr_sqrt)


# -- Inception Score ---------------------------------------------------------------------------


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = IS_SPLITS,
                    shuffle_seed: int | None = IS_SHUFFLE_SEED) -> tuple[float, float]:  # fmt: skip
    """Inception Score (mean, std over `splits`) from IS logits (N, 1008), as torch-fidelity does.

    Give the logits without fc bias (FIDInceptionV3's `logits`). Rows are permuted with
    numpy RandomState(shuffle_seed) first; None keeps their order (ADM's evaluator). The std is
    numpy's (population) std of the split scores.
    """
    x = torch.as_tensor(np.asarray(logits) if isinstance(logits, np.ndarray) else logits)
    if x.ndim != 2:
        raise ValueError(f"expected logits of shape (N, classes), got {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"cannot split {n} rows into {splits} parts")
    if shuffle_seed is not None:
        order = np.random.RandomState(shuffle_seed).permutation(n)
        x = x[torch.from_numpy(order).to(x.device)]
    x = x.double()  # (N, C)
    log_p = x.log_softmax(dim=1)  # (N, C)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]  # (n_i, C)
        log_marginal = part.exp().mean(dim=0).log()  # (C,)
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


# -- precision / recall ------------------------------------------------------------------------


def _squared_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(A, D), (B, D) -> (A, B) squared distances, ADM's formula in float32."""
    u, v = u.float(), v.float()
    norm_u = (u * u).sum(dim=1, keepdim=True)  # (A, 1)
    norm_v = (v * v).sum(dim=1).unsqueeze(0)  # (1, B)
    return (norm_u - 2 * (u @ v.t()) + norm_v).clamp(min=0)  # (A, B)


def manifold_radii(features: torch.Tensor, k: int = PR_NEIGHBOURS, batch: int = PR_BATCH) -> torch.Tensor:
    """Squared distance of each row (N, D) to its k-th nearest neighbour in the set -> (N,).

    The row itself (distance ~0) is the 0th neighbour, as in ADM. Memory: one (batch, batch) block
    plus (batch, k+1) running minima.
    """
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} feature rows, got {n}")
    radii = torch.empty(n, dtype=torch.float32, device=features.device)
    for r0 in range(0, n, batch):
        rows = features[r0 : r0 + batch]  # (b, D)
        best = None  # (b, k+1) smallest distances so far
        for c0 in range(0, n, batch):
            block = _squared_distances(rows, features[c0 : c0 + batch])  # (b, c)
            merged = block if best is None else torch.cat([best, block], dim=1)  # (b, <= k+1+c)
            best = merged.topk(min(k + 1, merged.shape[1]), dim=1, largest=False).values  # (b, k+1)
        radii[r0 : r0 + batch] = best.sort(dim=1).values[:, k]
    return radii


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch: int) -> torch.Tensor:
    """For each point (N, D): whether it lies in some ball (centre, radius) -> (N,) bool."""
    inside = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    for r0 in range(0, points.shape[0], batch):
        for c0 in range(0, centres.shape[0], batch):
            block = _squared_distances(points[r0 : r0 + batch], centres[c0 : c0 + batch])  # (b, c)
            hit = (block <= radii[c0 : c0 + batch].unsqueeze(0)).any(dim=1)  # (b,)
            inside[r0 : r0 + batch] |= hit
    return inside


def precision_recall(reference: torch.Tensor | np.ndarray, samples: torch.Tensor | np.ndarray,
                     k: int = PR_NEIGHBOURS, batch: int = PR_BATCH) -> tuple[float, float]:  # fmt: skip
    """ADM's improved precision and recall of `samples` (M, D) against `reference` (N, D)."""
    ref = torch.as_tensor(np.asarray(reference) if isinstance(reference, np.ndarray) else reference).float()
    smp = torch.as_tensor(np.asarray(samples) if isinstance(samples, np.ndarray) else samples).float()
    if ref.ndim != 2 or smp.ndim != 2 or ref.shape[1] != smp.shape[1]:
        raise ValueError(f"expected two feature sets (N, D), got {tuple(ref.shape)} and {tuple(smp.shape)}")
    smp = smp.to(ref.device)
    ref_radii = manifold_radii(ref, k, batch)  # (N,)
    smp_radii = manifold_radii(smp, k, batch)  # (M,)
    precision = _covered(smp, ref, ref_radii, batch).double().mean().item()
    recall = _covered(ref, smp, smp_radii, batch).double().mean().item()
    return precision, recall
