"""Loss tests against naive references written with explicit loops (float64)."""
import math

import pytest
import torch
import torch.nn.functional as F

from scl_plugin.losses import (ProjectionHead, SpatialAttention, cd_loss, global_contrastive_loss,
                               kd_loss, make_keys, spatial_contrastive_loss, supcon_from_similarity)

DT = torch.float64


# ----------------------------------------------------------------------------- references
def naive_supcon(sim, keys, tau):
    """Anchors = contrast set; mean over all anchors, anchors without positives count 0."""
    n = sim.shape[0]
    total = sim.new_zeros(())
    for a in range(n):
        others = [m for m in range(n) if m != a]
        log_z = torch.logsumexp(torch.stack([sim[a, m] / tau for m in others]), 0)
        pos = [p for p in others if keys[p] == keys[a]]
        if pos:
            total = total - sum(sim[a, p] / tau - log_z for p in pos) / len(pos)
    return total / n


def naive_directional_cos(q_x, v_x, k_y, v_y):
    """Per-position cos(v_x[i], aligned y[i]) (y's values aligned to x's positions), by loops."""
    dp = q_x.shape[-1]
    cos = []
    for i in range(q_x.shape[0]):
        w = torch.softmax(torch.stack([q_x[i] @ k_y[j] for j in range(k_y.shape[0])]) / math.sqrt(dp), 0)
        aligned = sum(w[j] * v_y[j] for j in range(v_y.shape[0]))
        cos.append(F.cosine_similarity(v_x[i], aligned, dim=0))
    return torch.stack(cos)


def naive_aggregate(x, aggregation, lam=6.0):
    """The authors' aggregations of the summed per-position similarities, written out."""
    if aggregation == "mean":
        return sum(x) / len(x)
    if aggregation == "sum":
        return sum(x)
    if aggregation == "max":
        return torch.stack(list(x)).max()
    return torch.log(sum(torch.exp(lam * xi) for xi in x)) / lam     # logsum


def naive_pairwise(qa, ka, va, qb, kb, vb, aggregation, lam=6.0):
    """S_ab = agg_i (c_ab[i] + c_ba[i]) (authors' models/attention.py), all pairs by loops."""
    rows = []
    for a in range(qa.shape[0]):
        rows.append(torch.stack([
            naive_aggregate(naive_directional_cos(qa[a], va[a], kb[b], vb[b])
                            + naive_directional_cos(qb[b], vb[b], ka[a], va[a]), aggregation, lam)
            for b in range(qb.shape[0])]))
    return torch.stack(rows)


def naive_gc(z, keys, tau):
    n = z.shape[0]
    sim = torch.stack([torch.stack([F.cosine_similarity(z[i], z[j], dim=0) for j in range(n)])
                       for i in range(n)])
    return naive_supcon(sim, keys, tau)


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


# ----------------------------------------------------------------------------- core, by hand
S_HAND = torch.tensor([[1.0, 0.5, 0.8, 0.0],
                       [0.5, 1.0, 0.0, 0.8],
                       [0.8, 0.0, 1.0, 0.5],
                       [0.0, 0.8, 0.5, 1.0]], dtype=DT)


def test_supcon_by_hand_supervised_vs_selfsup():
    # 2 images (x0, x1) x 2 views, samples ordered [x0 v1, x1 v1, x0 v2, x1 v2]; tau = 0.5.
    tau, idx = 0.5, torch.arange(4)
    # Every row holds {0.5, 0.8, 0.0} off the diagonal, so one log-partition serves all anchors:
    log_z = math.log(math.exp(0.5 / tau) + math.exp(0.8 / tau) + math.exp(0.0 / tau))
    # self-supervised: the only positive of each anchor is its other view, similarity 0.8
    keys = make_keys(torch.tensor([7, 7]), "selfsup")          # [0, 1, 0, 1]
    ss = supcon_from_similarity(S_HAND, keys, keys, idx, tau)
    assert ss.item() == pytest.approx(log_z - 0.8 / tau, abs=1e-12)
    # supervised, both images of class 7: positives are the 3 others (0.5, 0.8, 0.0)
    keys = make_keys(torch.tensor([7, 7]), "supervised")
    sup = supcon_from_similarity(S_HAND, keys, keys, idx, tau)
    assert sup.item() == pytest.approx(log_z - (0.5 + 0.8 + 0.0) / 3 / tau, abs=1e-12)
    # supervised with two classes = self-supervised here
    keys = make_keys(torch.tensor([3, 4]), "supervised")
    assert supcon_from_similarity(S_HAND, keys, keys, idx, tau).item() == pytest.approx(ss.item())
    # anchors without positives (samples 0 and 1) count 0 in a mean over all 4 anchors
    keys = torch.tensor([0, 1, 2, 2])
    got = supcon_from_similarity(S_HAND, keys, keys, idx, tau)
    assert got.item() == pytest.approx((0 + 0 + 2 * (log_z - 0.5 / tau)) / 4, abs=1e-12)
    assert got.item() == pytest.approx(naive_supcon(S_HAND, keys, tau).item(), abs=1e-12)


def test_supcon_anchor_index_offset():
    # local anchors = rows 2..3 of the global set: same per-anchor terms as the full matrix
    keys = torch.tensor([0, 1, 0, 1])
    full = supcon_from_similarity(S_HAND, keys, keys, torch.arange(4), 0.3)
    top = supcon_from_similarity(S_HAND[:2], keys[:2], keys, torch.arange(2), 0.3)
    bottom = supcon_from_similarity(S_HAND[2:], keys[2:], keys, torch.arange(2, 4), 0.3)
    assert ((top + bottom) / 2).item() == pytest.approx(full.item(), abs=1e-12)


def test_supcon_large_similarities_stable():
    sim = torch.tensor([[0.0, 90.0, 80.0], [90.0, 0.0, 85.0], [80.0, 85.0, 0.0]])
    loss = supcon_from_similarity(sim, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]),
                                  torch.arange(3), 0.01)
    assert torch.isfinite(loss)


# ----------------------------------------------------------------------------- GC
@pytest.mark.parametrize("n,dim", [(6, 5), (8, 3)])
def test_global_contrastive_matches_naive(n, dim):
    torch.manual_seed(n)
    z = torch.randn(n, dim, dtype=DT, requires_grad=True)
    keys = torch.randint(0, 3, (n,))
    loss, ref = global_contrastive_loss(z, keys, 0.2), naive_gc(z, keys, 0.2)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-10)
    assert torch.allclose(_grads(loss, z)[0], _grads(ref, z)[0], atol=1e-10)


# ----------------------------------------------------------------------------- SC
def _setup(n, hw, d, dp=4, aggregation="mean", seed=0):
    torch.manual_seed(seed)
    att = SpatialAttention(d, dp, aggregation).to(DT)
    side = int(math.isqrt(hw))
    feats = torch.randn(n, d, side, hw // side, dtype=DT, requires_grad=True)
    return att, feats


@pytest.mark.parametrize("n,hw,d,aggregation", [(6, 4, 5, "mean"), (5, 9, 3, "mean"),
                                                (4, 1, 4, "mean"), (5, 4, 3, "sum"),
                                                (5, 4, 3, "max"), (5, 4, 3, "logsum"),
                                                (4, 9, 3, "logsum")])
def test_spatial_contrastive_matches_naive(n, hw, d, aggregation):
    att, feats = _setup(n, hw, d, aggregation=aggregation)
    keys = torch.tensor([0, 1, 0, 1, 2, 0][:n])
    params = [feats] + list(att.parameters())
    loss = spatial_contrastive_loss(feats, keys, att, 0.1, chunk_size=2)
    q, k, v = att.project(feats)
    ref = naive_supcon(naive_pairwise(q, k, v, q, k, v, aggregation), keys, 0.1)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-10)
    for g, r in zip(_grads(loss, params), _grads(ref, params)):
        assert torch.allclose(g, r, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("aggregation,lam", [("mean", 6.0), ("max", 6.0), ("logsum", 2.5)])
def test_pairwise_asymmetric_matches_naive(aggregation, lam):
    torch.manual_seed(1)
    att = SpatialAttention(3, 4, aggregation, lambda_lse=lam).to(DT)
    qa, ka, va = (torch.randn(3, 4, 4, dtype=DT, requires_grad=True) for _ in range(3))
    qb, kb, vb = (torch.randn(5, 4, 4, dtype=DT, requires_grad=True) for _ in range(3))
    ins = [qa, ka, va, qb, kb, vb]
    got = att.pairwise_similarity(*ins, chunk_size=2)
    ref = naive_pairwise(*ins, aggregation, lam)
    assert got.shape == (3, 5) and torch.allclose(got, ref, atol=1e-12)
    if aggregation == "max":   # the authors' max of the sum, not the sum of per-direction maxima
        ca = torch.stack([naive_directional_cos(qa[0], va[0], kb[0], vb[0]),
                          naive_directional_cos(qb[0], vb[0], ka[0], va[0])])
        assert got[0, 0] < ca.amax(1).sum() - 1e-6
    w = torch.randn(3, 5, dtype=DT)
    for g, r in zip(_grads((got * w).sum(), ins), _grads((ref * w).sum(), ins)):
        assert torch.allclose(g, r, atol=1e-10)
    # the symmetric shortcut (same tensors) equals the two-direction path (cloned tensors)
    sym = att.pairwise_similarity(qa, ka, va, qa, ka, va)
    two = att.pairwise_similarity(qa, ka, va, qa.clone(), ka.clone(), va.clone())
    assert torch.allclose(sym, two, atol=1e-12) and torch.allclose(sym, sym.t(), atol=1e-14)


def test_chunked_equals_unchunked():
    att, feats = _setup(10, 9, 6, dp=5, seed=3)
    keys = make_keys(torch.tensor([0, 1, 1, 0, 2]), "supervised")
    params = [feats] + list(att.parameters())
    results = []
    for chunk in (10, 1, 3, 0):
        loss = spatial_contrastive_loss(feats, keys, att, 0.1, chunk_size=chunk)
        results.append((loss.detach(), _grads(loss, params)))
    for loss, grads in results[1:]:
        assert torch.allclose(loss, results[0][0], atol=1e-13, rtol=0)
        for g, r in zip(grads, results[0][1]):
            assert torch.allclose(g, r, atol=1e-12, rtol=0)


def test_identical_inputs_alignment():
    att = SpatialAttention(4, 4).to(DT)
    # Aligning a map to itself gives S_AA = 2 (the maximum, cos <= 1 per position and per
    # direction) only when the attention reproduces each position: (1) one position,
    v = torch.randn(3, 1, 4, dtype=DT)
    q = torch.randn(3, 1, 4, dtype=DT)
    s = att.pairwise_similarity(q, q, v, q, q, v)
    assert torch.allclose(s.diagonal(), torch.full((3,), 2.0, dtype=DT), atol=1e-12)
    # (2) sharp self-attention (q = k = large one-hot per position): S_AA -> 2 and it is the
    # row maximum;
    P = 4
    q = (30.0 * torch.eye(P, dtype=DT)).expand(3, P, P)
    v = torch.randn(3, P, 4, dtype=DT)
    s = att.pairwise_similarity(q, q, v, q, q, v)
    assert torch.allclose(s.diagonal(), torch.full((3,), 2.0, dtype=DT), atol=1e-9)
    assert (s <= 2.0 + 1e-12).all() and (s.argmax(1) == torch.arange(3)).all()
    # (3) but for generic projections the attention mixes positions and S_AA < 2.
    q, k = torch.randn(2, 3, P, 4, dtype=DT).unbind(0)
    s = att.pairwise_similarity(q, k, v, q, k, v)
    assert (s.diagonal() < 2.0 - 1e-3).all() and (s <= 2.0).all()


def test_gradcheck_tiny():
    att, feats = _setup(4, 2, 3, dp=2, seed=5)
    feats = feats.detach().view(4, 3, 1, 2).requires_grad_()
    keys = torch.tensor([0, 1, 0, 1])
    assert torch.autograd.gradcheck(
        lambda f: spatial_contrastive_loss(f, keys, att, 0.5, chunk_size=1), (feats,))
    qa, ka, va = (torch.randn(2, 2, 2, dtype=DT, requires_grad=True) for _ in range(3))
    qb, kb, vb = (torch.randn(3, 2, 2, dtype=DT, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda *t: att.pairwise_similarity(*t, chunk_size=1), (qa, ka, va, qb, kb, vb))
    z = torch.randn(5, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z: global_contrastive_loss(z, torch.tensor([0, 0, 1, 1, 2]), 0.3), (z,))


def test_projection_shapes_and_float32():
    att = SpatialAttention(16, 8)
    q, k, v = att.project(torch.randn(3, 16, 5, 5))
    assert q.shape == k.shape == v.shape == (3, 25, 8)
    assert all(b is None for layer in ProjectionHead(16, 8) if hasattr(layer, "bias")
               for b in [layer.bias])
    loss = spatial_contrastive_loss(torch.randn(6, 16, 5, 5), make_keys(torch.arange(3), "selfsup"),
                                    att, 0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with pytest.raises(ValueError):
        SpatialAttention(4, aggregation="softmax")


# ----------------------------------------------------------------------------- distillation
def test_kd_by_hand():
    T = 2.0
    s, t = torch.tensor([[1.0, 0.0]], dtype=DT, requires_grad=True), torch.tensor([[0.0, 1.0]], dtype=DT)
    # p_t = softmax([0, .5]), p_s = softmax([.5, 0]); KL(p_t || p_s) * T^2, one sample
    e = math.exp(0.5)
    p_t = [1 / (1 + e), e / (1 + e)]
    p_s = [e / (1 + e), 1 / (1 + e)]
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    assert kd_loss(s, t, T).item() == pytest.approx(kl * T * T, abs=1e-12)
    assert kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    # batchmean: two identical rows give the same value
    assert kd_loss(s.repeat(2, 1), t.repeat(2, 1), T).item() == pytest.approx(kl * T * T, abs=1e-12)


def test_cd_by_hand():
    zs = torch.tensor([[1.0, 0.0], [3.0, 4.0]], dtype=DT, requires_grad=True)
    zt = torch.tensor([[0.0, 2.0], [6.0, 8.0]], dtype=DT, requires_grad=True)
    # row 1: (0,1) - (1,0) -> squared norm 2; row 2: same direction -> 0; mean = 1
    loss = cd_loss(zs, zt)
    assert loss.item() == pytest.approx(1.0, abs=1e-12)
    loss.backward()
    assert zt.grad is None and zs.grad is not None   # the teacher is fixed
