"""Logistic regression on many few-shot episodes at once, matching scikit-learn.

The objective
-------------
For one episode with support features ``X`` (S x d), labels ``y`` in ``0..K-1``, weights
``W`` (d x K) and intercept ``b`` (K), scikit-learn's ``LogisticRegression(C=C)`` (L2
penalty, ``fit_intercept=True``, lbfgs, multinomial for K >= 3) minimises::

    f(W, b) = C * sum_i CE(softmax(W^T x_i + b), y_i) + 1/2 * ||W||_F^2

(the intercept is not penalised). scikit-learn 1.9 actually hands lbfgs the same function
divided by ``C * S``: ``mean_i CE_i + ||W||^2 / (2 C S)`` (``l2_reg_strength = 1/(C*sw_sum)``
in ``sklearn/linear_model/_logistic.py``), which has the same minimiser; its ``tol`` is the
lbfgs ``gtol`` on that scaled objective, and we use ``tol`` with the same meaning.

For K == 2 scikit-learn fits the *binary* model: one weight vector ``w`` and intercept
``b`` with ``C * sum_i log(1 + exp(-s_i (w.x_i + b))) + ||w||^2 / 2``. That is the
multinomial objective above with class 0's column pinned to zero, which is how we solve
it, so K == 2 episodes give scikit-learn's answer too.

Why a hand-written solver
-------------------------
scikit-learn solves one problem per call; an evaluation of 1,000-10,000 episodes spends
nearly all of its time in per-call Python/scipy overhead on tiny problems (25 x 640 for
5-way 5-shot). It has no batched multi-problem solver, and neither does torch, so we write
one that treats all episodes as one batch of tensors.

Solver choice: Newton's method in the span of the support points
---------------------------------------------------------------
Newton directly on (W, b) needs a ((d+1)K)^2 Hessian per episode (3205^2 for d=640, K=5):
far too big to batch. But the penalty acts on W only and the loss sees W only through
``X W``, so any part of W orthogonal to the row space of X adds penalty and nothing
else: at the optimum W = Q Z where Q (d x r, r = rank <= S) is an orthonormal basis of
that row space (representer theorem). Taking Q from the Cholesky factor of the S x S
Gram matrix ``X X^T = L L^T`` (``Q = X^T L^-T``; eigendecomposition if singular), the
problem becomes *exactly* the same logistic regression on the r-dimensional features
``F = X Q = L`` with penalty ``||Z||^2 = ||W||^2``. For 5-way 5-shot that is
(25 + 1) x 4 = 104 unknowns per episode instead of 3205.

On that small problem we run Newton's method, which converges in 3-5 iterations to far
below scikit-learn's tolerance (we chose it over a batched L-BFGS, which needs tens to
hundreds of iterations with per-episode line searches). Two variants:

* ``solver="newton-cg"`` (default): each Newton system is solved by Jacobi-preconditioned
  conjugate gradients with Hessian-vector products, i.e. a few tiny batched matmuls, so
  no Hessian is formed; fastest on CPU (~20x scikit-learn on 2 cores, see
  ``benchmarks/perf/eval_speed.py``).
* ``solver="newton"``: dense Hessian build + batched LU/Cholesky; exact steps, kept as a
  cross-check and for GPUs, where large batched factorisations are cheap.

Queries are scored with ``W = X^T M`` formed in the features' own precision (float32):
no float64 copy of the d-dimensional features is ever made.

Details: a backtracking (Armijo) line search makes Newton globally convergent on this
strictly convex problem. For K >= 3 the class dimension is restricted to the sum-zero
subspace (where the optimal W lies, see ``_class_basis``), which also fixes the
intercept's free constant shift to scikit-learn's convention (intercepts summing to zero,
as lbfgs started at zero keeps them).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..utils import torch_threads as _torch_threads

__all__ = [
    "fit_logreg", "fit_logreg_gram", "fit_predict_logreg", "fit_predict_proba_logreg", "fit_predict_proba_logreg_sets", "predict",
    "decision_function", "sklearn_logreg_predict_proba",
    "logreg_objective",
    "BatchedLogisticRegression", "sklearn_logreg_fit", "sklearn_logreg_predict",
]

# Cap on the working memory of one Newton batch (bytes); episodes are solved in chunks.
_WORK_BYTES = 512 * 2**20


def _as_tensor(a, dtype=None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.to(dtype) if dtype is not None else t


def _class_basis(K: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Orthonormal K x Kf basis P of the class-space directions the solution can use.

    Multinomial: at the optimum every row of W sums to zero over classes (the CE gradient
    does, so the penalty's stationarity condition forces it) and the intercept can be
    chosen to as well, so (W, b) = (Z, beta) P^T with P an orthonormal basis of the
    sum-zero subspace (Kf = K - 1); ``||W|| = ||Z||`` because P^T P = I. This removes the
    intercept's flat direction and shrinks the Newton system from (r+1)K to (r+1)(K-1).
    Binary (scikit-learn's model): class 0 is pinned to zero, P = [0, 1]^T (Kf = 1).
    """
    if K == 2:
        return torch.tensor([[0.0], [1.0]], dtype=dtype, device=device)
    centred = torch.eye(K, dtype=dtype, device=device) - 1.0 / K
    Q, _ = torch.linalg.qr(centred[:, :K - 1])
    return Q


def _objective(Fa: torch.Tensor, Y: torch.Tensor, theta: torch.Tensor, P: torch.Tensor,
               C: float) -> torch.Tensor:
    """Per-episode ``C * sum_i CE(P theta^T a_i) + 0.5 ||Z||^2``, a_i = [f_i, 1]."""
    # (theta^T Fa^T)^T: batched GEMMs with K output rows and S columns measured ~2x faster
    # than with S rows and K columns (and reading Fa through a transposed view is faster
    # still than a contiguous transposed copy).
    logits = P @ (theta.transpose(1, 2) @ Fa.transpose(1, 2))            # (E, K, S)
    ce = -(Y.transpose(1, 2) * torch.log_softmax(logits, dim=1)).sum(dim=(1, 2))
    return C * ce + 0.5 * theta[:, :-1].pow(2).sum(dim=(1, 2))


def _backtrack(Fa, Y, th, step, decrement, f, P, C):
    """Armijo backtracking along ``-step`` for every active episode; never accepts an increase
    (which is only possible at round-off level). Also returns the round-off scale and the
    episodes whose step was rejected, which the callers use to stop."""
    roundoff = 8 * torch.finfo(Fa.dtype).eps * (1 + f.abs())
    t = torch.ones_like(f)
    new_th = th - step
    new_f = _objective(Fa, Y, new_th, P, C)
    for _ in range(40):
        fail = new_f > f - 1e-4 * t * decrement + roundoff
        if not fail.any():
            break
        t = torch.where(fail, t * 0.5, t)
        if 4 * int(fail.sum()) > fail.numel():   # many: cheaper than gathering the features
            new_th = torch.where(fail[:, None, None], th - t[:, None, None] * step, new_th)
            new_f = torch.where(fail, _objective(Fa, Y, new_th, P, C), new_f)
        else:
            new_th[fail] = th[fail] - t[fail, None, None] * step[fail]
            new_f[fail] = _objective(Fa[fail], Y[fail], new_th[fail], P, C)
    worse = new_f > f
    new_th[worse], new_f[worse] = th[worse], f[worse]
    return new_th, new_f, roundoff, worse


def _newton(F: torch.Tensor, Y: torch.Tensor, P: torch.Tensor, C: float,
            max_iter: int, tol: float, hessian_dtype: torch.dtype) -> torch.Tensor:
    """Batched damped Newton for ``min_theta C * sum_i CE([f_i, 1] theta P^T) + 0.5 ||Z||^2``.

    F: (E, S, r) features, Y: (E, S, K) one-hot, P: (K, Kf) class basis. Returns theta
    (E, r+1, Kf): rows 0..r-1 are Z, the last row is the intercept.
    """
    E, S, r = F.shape
    Kf = P.shape[1]
    n = (r + 1) * Kf
    Fa = torch.cat([F, F.new_ones(E, S, 1)], dim=-1)                     # (E, S, r+1)
    # Outer products a_s a_s^T, fixed across iterations: the Hessian of the data term is
    # sum_s (a_s a_s^T) kron (P^T (diag p_s - p_s p_s^T) P), one batched matmul with these.
    Fh = Fa.to(hessian_dtype)
    outer = (Fh.unsqueeze(-1) * Fh.unsqueeze(-2)).reshape(E, S, (r + 1) ** 2)
    Ph = P.to(hessian_dtype)
    theta = F.new_zeros(E, r + 1, Kf)
    f = _objective(Fa, Y, theta, P, C)
    scale = 1.0 / (C * S)   # scikit-learn's objective is ours times this
    active = torch.arange(E)
    for _ in range(max_iter):
        full = active.numel() == E   # plain views instead of gathers while nothing is done
        Fa_a, Y_a, th = (Fa, Y, theta) if full else (Fa[active], Y[active], theta[active])
        e = Fa_a.shape[0]
        p = torch.softmax(Fa_a @ th @ P.T, dim=-1)                       # (e, S, K)
        grad = C * Fa_a.transpose(1, 2) @ ((p - Y_a) @ P)                # (e, r+1, Kf)
        grad[:, :-1] += th[:, :-1]
        done = grad.abs().flatten(1).amax(dim=1) * scale <= tol
        if done.all():
            break
        if done.any():
            keep = ~done
            active, Fa_a, Y_a, th, p, grad = (active[keep], Fa_a[keep], Y_a[keep], th[keep],
                                              p[keep], grad[keep])
            full = False
        e = Fa_a.shape[0]
        ph = p.to(hessian_dtype)
        q = ph @ Ph                                                      # (e, S, Kf)
        A = Ph.T @ (ph.unsqueeze(-1) * Ph) - q.unsqueeze(-1) * q.unsqueeze(-2)  # (e,S,Kf,Kf)
        # The Newton *direction* is computed in `hessian_dtype` (float32 by default: twice
        # as fast, and an inexact direction only slows the final digits slightly); the
        # gradient, objective and line search stay in float64, which set the accuracy.
        T = (outer if full else outer[active]).transpose(1, 2) @ A.reshape(e, S, Kf * Kf)
        H = T.reshape(e, r + 1, r + 1, Kf, Kf).permute(0, 1, 3, 2, 4).reshape(e, n, n) * C
        H.diagonal(dim1=1, dim2=2)[:, : r * Kf] += 1.0                   # penalty on Z
        g = grad.reshape(e, n, 1)
        # H is symmetric positive definite, but batched Cholesky of many ~100 x 100
        # matrices measured 5-10x slower than batched LU on CPU (MKL threading overhead
        # per matrix), so LU for those; MKL's batched LU misbehaves (xLASWP errors) from
        # n ~ 256 on, where Cholesky's overhead no longer matters.
        if n < 200:
            step = torch.linalg.solve(H, g.to(hessian_dtype))
        else:
            Lc, info = torch.linalg.cholesky_ex(H)
            step = torch.cholesky_solve(g.to(hessian_dtype), Lc)
            bad = info != 0
            if bad.any():  # not numerically positive definite: least squares instead
                step[bad] = torch.linalg.lstsq(H[bad], g[bad].to(hessian_dtype)).solution
        step = step.to(F.dtype).reshape(e, r + 1, Kf)
        decrement = (g.reshape(e, n) * step.reshape(e, n)).sum(dim=1).clamp_min(0)  # g^T H^-1 g
        new_th, new_f, roundoff, worse = _backtrack(Fa_a, Y_a, th, step, decrement, f[active], P, C)
        if full:
            theta, f = new_th, new_f
        else:
            theta[active] = new_th
            f[active] = new_f
        # Stop episodes whose predicted decrease is below round-off: more steps can't help.
        active = active[(0.5 * decrement > roundoff) & ~worse]
        if active.numel() == 0:
            break
    return theta


def _newton_cg(F: torch.Tensor, Y: torch.Tensor, P: torch.Tensor, C: float,
               max_iter: int, tol: float) -> torch.Tensor:
    """Batched truncated Newton (Newton-CG) for the same problem as :func:`_newton`.

    Each Newton system ``H s = g`` is solved by Jacobi-preconditioned conjugate gradients
    using Hessian-vector products, which on the reduced (S x (r+1)) problem are a few tiny
    batched matmuls: no n x n Hessian is formed or factorised. The CG tolerance follows the
    usual forcing sequence ``eta = min(0.5, sqrt(||g||))`` (superlinear convergence); the
    line search and stopping rule are those of :func:`_newton`. The Hessian-vector products
    run in float32 (half the memory traffic of the loop's largest tensor; an inexact CG
    direction only slows the last digits, which the float64 gradient and line search set).
    """
    E, S, r = F.shape
    Kf = P.shape[1]
    Fa = torch.cat([F, F.new_ones(E, S, 1)], dim=-1)                     # (E, S, r+1)
    Fa2 = Fa.pow(2)
    Fh, Ph = Fa.float(), P.float()
    pen = F.new_ones(r + 1, 1)
    pen[-1] = 0.0                                                        # intercept unpenalised
    theta = F.new_zeros(E, r + 1, Kf)
    f = _objective(Fa, Y, theta, P, C)
    scale = 1.0 / (C * S)
    active = torch.arange(E)
    dims = (1, 2)

    for _ in range(max_iter):
        full = active.numel() == E   # plain views instead of gathers while nothing is done
        Fa_a, Y_a, th = (Fa, Y, theta) if full else (Fa[active], Y[active], theta[active])
        Fh_a, Fa2_a = (Fh, Fa2) if full else (Fh[active], Fa2[active])
        # GEMMs with Kf output rows and S (or r+1) columns, Fa read through transposed views:
        # ~2x faster than the S x Kf orientation (narrow outputs are slow in batched GEMM).
        pT = torch.softmax(P @ (th.transpose(1, 2) @ Fa_a.transpose(1, 2)), dim=1)  # (e, K, S)
        p = pT.transpose(1, 2)                                           # (e, S, K)
        grad = C * ((P.T @ (pT - Y_a.transpose(1, 2))) @ Fa_a).transpose(1, 2) + pen * th  # (e, r+1, Kf)
        gmax = grad.abs().flatten(1).amax(dim=1) * scale
        done = gmax <= tol
        if done.all():
            break
        if done.any():
            keep = ~done
            active, Fa_a, Y_a, th, pT, grad, gmax = (active[keep], Fa_a[keep], Y_a[keep], th[keep],
                                                     pT[keep], grad[keep], gmax[keep])
            Fh_a, Fa2_a = Fh_a[keep], Fa2_a[keep]
            p = pT.transpose(1, 2)
        pT = pT.float()                                                  # (e, K, S)
        FhT_a = Fh_a.transpose(1, 2)                                     # (e, r+1, S) view

        def hvp(v):  # H v = C Fa^T [(diag p - p p^T)(Fa v P^T)] P + pen * v, in float32
            # Computed transposed, (small x r+1) @ (r+1 x S): batched GEMMs with 5 output
            # columns measured ~2.5x slower than with 5 output rows and S columns.
            dlT = (Ph @ v.float().transpose(1, 2)) @ FhT_a               # (e, K, S)
            pdl = pT * dlT
            wT = pdl - pT * pdl.sum(dim=1, keepdim=True)
            return (C * (Ph.T @ wT) @ Fh_a).transpose(1, 2).to(v.dtype) + pen * v

        # Jacobi preconditioner: diag(H) = C (Fa^2)^T diag(P^T A_s P) + pen.
        diagA = p @ P.pow(2) - (p @ P).pow(2)                           # (e, S, Kf)
        minv = 1.0 / (C * (diagA.transpose(1, 2) @ Fa2_a).transpose(1, 2) + pen).clamp_min(1e-12)
        gnorm = grad.flatten(1).norm(dim=1)
        eta = torch.clamp(torch.sqrt(gmax), max=0.5)
        x = torch.zeros_like(grad)
        res = grad.clone()
        z = minv * res
        d = z.clone()
        rz = (res * z).sum(dims)
        live = torch.ones_like(gnorm, dtype=torch.bool)
        for _cg in range((r + 1) * Kf):
            Hd = hvp(d)
            dHd = (d * Hd).sum(dims)
            alpha = torch.where(live & (dHd > 0), rz / dHd.clamp_min(1e-300), torch.zeros_like(rz))
            x = x + alpha[:, None, None] * d
            res = res - alpha[:, None, None] * Hd
            live = live & (res.flatten(1).norm(dim=1) > eta * gnorm)
            if not live.any():
                break
            z = minv * res
            rz_new = (res * z).sum(dims)
            beta = torch.where(live, rz_new / rz.clamp_min(1e-300), torch.zeros_like(rz))
            d = z + beta[:, None, None] * d
            rz = rz_new
        step = x
        decrement = (grad * step).sum(dims).clamp_min(0)
        new_th, new_f, roundoff, worse = _backtrack(Fa_a, Y_a, th, step, decrement, f[active], P, C)
        if active.numel() == E:
            theta, f = new_th, new_f
        else:
            theta[active] = new_th
            f[active] = new_f
        active = active[(0.5 * decrement > roundoff) & ~worse]
        if active.numel() == 0:
            break
    return theta


def _fit_logreg_impl(X, y, num_classes: int, C: float = 1.0, max_iter: int = 1000,
               tol: float = 1e-4, dtype: torch.dtype = torch.float64,
               hessian_dtype: torch.dtype = torch.float32, solver: str = "newton-cg"
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fit one L2 logistic regression per episode, all episodes at once.

    Minimises, independently for every episode e,
    ``C * sum_i CE(softmax(W_e^T x_ei + b_e), y_ei) + 1/2 ||W_e||_F^2`` (intercept not
    penalised), i.e. scikit-learn's ``LogisticRegression(C=C)``; for ``num_classes == 2``
    scikit-learn's binary model, returned as ``W[..., 0] = 0, b[..., 0] = 0``.

    Args:
        X: (E, S, d) support features; y: (E, S) integer labels in ``0..num_classes-1``.
        max_iter: cap on Newton iterations (a handful are used in practice).
        tol: scikit-learn's tolerance (its lbfgs ``gtol``: largest |gradient| of the scaled
            objective ``f / (C S)``). Newton converges fast, so we stop an episode
            only at ``tol * 1e-1`` (or when the predicted decrease is below round-off):
            the result is at least as close to the optimum as scikit-learn's.
        dtype: precision of the objective, gradient and result (float64 for agreement
            with scikit-learn).
        hessian_dtype: precision of the Newton-direction linear solve (float32 is faster
            and does not limit the final accuracy, which the float64 gradient sets).

    Returns:
        ``W`` (E, d, K) and ``b`` (E, K) in ``dtype``; logits are ``X @ W + b[:, None]``.
    """
    X = _as_tensor(X, dtype)
    y = _as_tensor(y).long().to(X.device)
    if X.dim() != 3 or y.shape != X.shape[:2]:
        raise ValueError(f"expected X (E,S,d) and y (E,S), got {tuple(X.shape)} and "
                         f"{tuple(y.shape)}")
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    E, S, d = X.shape
    if d > S:
        M, b = _fit_logreg_gram_impl(X @ X.transpose(1, 2), y, num_classes, C=C,
                                     max_iter=max_iter, tol=tol, hessian_dtype=hessian_dtype,
                                     solver=solver)
        return X.transpose(1, 2) @ M, b
    Y = torch.nn.functional.one_hot(y, int(num_classes)).to(dtype)
    return _solve(X, Y, float(C), max_iter, tol, hessian_dtype, solver)


def _fit_logreg_gram_impl(G, y, num_classes: int, C: float = 1.0, max_iter: int = 1000,
                    tol: float = 1e-4, hessian_dtype: torch.dtype = torch.float32,
                    solver: str = "newton-cg") -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_logreg` from the support Gram matrices ``G = X X^T`` (E, S, S) alone.

    Returns ``M`` (E, S, K) and ``b`` (E, K) with ``W = X^T M`` (the representer form), so
    query logits are ``Xq (X^T M) + b``: no d-dimensional float64 copies of
    the features are ever needed. Computed in G's dtype (use float64).
    """
    G = _as_tensor(G)
    dtype = G.dtype
    y = _as_tensor(y).long().to(G.device)
    E, S, _ = G.shape
    Y = torch.nn.functional.one_hot(y, int(num_classes)).to(dtype)
    # Reduce to the row space of each episode's support set (exact, see module docstring):
    # any F with F F^T = G is F = X Q for an orthonormal basis Q of that row space, and
    # then W = Q Z = X^T M. Cholesky G = L L^T gives F = L, Q = X^T L^-T
    # and M = L^-T Z (25x faster than eigh for 25 x 25 Grams); episodes whose G is singular or badly
    # conditioned (repeated support points) use the eigendecomposition
    # G = U diag(lam) U^T instead, F = U diag(sqrt(lam)), dropping null directions.
    L, info = torch.linalg.cholesky_ex(G)
    diag = L.diagonal(dim1=1, dim2=2)
    ok = (info == 0) & (diag.amin(dim=1) ** 2 > 1e-10 * diag.pow(2).amax(dim=1))
    if bool(ok.all()):   # the usual case: no copies, no gathers
        Z, b = _solve(L, Y, float(C), max_iter, tol, hessian_dtype, solver)
        # M = L^-T Z: a triangular solve against the K columns of Z (not an S x S inverse)
        return torch.linalg.solve_triangular(L.transpose(1, 2), Z, upper=True), b
    F = L.clone()
    bad = ~ok
    lam, U = torch.linalg.eigh(G[bad])
    keep = lam > lam[:, -1:].clamp_min(0) * (S * torch.finfo(dtype).eps) * 10
    sqrt_lam = lam.clamp_min(0).sqrt()
    F[bad] = U * torch.where(keep, sqrt_lam, torch.zeros_like(sqrt_lam)).unsqueeze(1)
    inv_sqrt = torch.where(keep, 1.0 / sqrt_lam.clamp_min(torch.finfo(dtype).tiny),
                           torch.zeros_like(sqrt_lam))
    Z, b = _solve(F, Y, float(C), max_iter, tol, hessian_dtype, solver)
    M = torch.empty_like(Z)
    if ok.any():
        M[ok] = torch.linalg.solve_triangular(L[ok].transpose(1, 2), Z[ok], upper=True)
    M[bad] = (U * inv_sqrt.unsqueeze(1)) @ Z[bad]
    return M, b


def _solve(F, Y, C, max_iter, tol, hessian_dtype, solver):
    """Solve the reduced problem on features F (E, S, r); returns (Z (E, r, K), b (E, K))."""
    E, S, r = F.shape
    K = Y.shape[-1]
    P = _class_basis(K, F.dtype, F.device)
    Kf = P.shape[1]
    n = (r + 1) * Kf
    if solver == "newton":   # dense Hessians and the a_s a_s^T outer products
        per_episode = 8 * (S * (r + 1) ** 2 + 4 * n * n + 4 * S * K * Kf * Kf)
    else:                    # Newton-CG: a few (S x r+1) and (r+1 x Kf) tensors only
        per_episode = 8 * (3 * S * (r + 1) + 8 * S * K + 12 * n)
    chunk = max(1, int(_WORK_BYTES // per_episode))
    # Newton's last iterations converge fast and are cheap, so we go past scikit-learn's
    # gtol (tol * 1e-1 on the same scaled gradient), or until the predicted decrease is
    # below round-off.
    if solver == "newton-cg":
        thetas = [_newton_cg(F[i:i + chunk], Y[i:i + chunk], P, C, max_iter, tol * 1e-1)
                  for i in range(0, E, chunk)]
    elif solver == "newton":
        thetas = [_newton(F[i:i + chunk], Y[i:i + chunk], P, C, max_iter, tol * 1e-1,
                          hessian_dtype) for i in range(0, E, chunk)]
    else:
        raise ValueError(f"unknown solver {solver!r}; allowed: newton-cg, newton")
    theta = torch.cat(thetas) if thetas else F.new_zeros(0, r + 1, Kf)
    return theta[:, :-1] @ P.T, theta[:, -1] @ P.T                      # (E, r, K), (E, K)


def _fit_logits_logreg_impl(Xs, ys, Xq, num_classes: int, C: float = 1.0, max_iter: int = 1000,
                            tol: float = 1e-4, dtype: torch.dtype = torch.float64,
                            solver: str = "newton-cg") -> torch.Tensor:
    """Fit on (Xs, ys) and score Xq, per episode: query logits (E, Q, K) in ``dtype``. Same
    result as :func:`fit_logreg` + :func:`decision_function` up to the precision of the
    inputs, faster: when d > S it solves from the inner products ``Xs Xs^T`` and scores the
    queries with ``W = Xs^T M`` in the features' own precision."""
    Xs, Xq = _as_tensor(Xs), _as_tensor(Xq)
    E, S, d = Xs.shape
    threads = _threads_for(Xs)
    if d <= S:
        with _torch_threads(threads):
            W, b = _fit_logreg_impl(Xs, ys, num_classes, C=C, max_iter=max_iter, tol=tol, dtype=dtype,
                                    solver=solver)
        return decision_function(Xq, W, b)
    # Inner products in the features' own precision (for float32 features a relative error
    # ~1e-7, far below scikit-learn's own tolerance), everything after in `dtype`: this
    # avoids float64 copies of all the d-dimensional features, the dominant cost otherwise.
    # These two large matmuls use every thread; only the solver's many tiny ops run on one.
    G = (Xs @ Xs.transpose(1, 2)).to(dtype)
    with _torch_threads(threads):
        M, b = _fit_logreg_gram_impl(G, ys, num_classes, C=C, max_iter=max_iter, tol=tol, solver=solver)
    return _query_logits(Xs, Xq, M, b, dtype)


def _query_logits(Xs: torch.Tensor, Xq: torch.Tensor, M: torch.Tensor, b: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """Query logits ``Xq W + b`` (E, Q, K) in ``dtype`` for the representer-form weights
    ``W = Xs^T M``, formed in the features' own precision.

    Through ``W^T = M^T Xs`` (K*S*d + Q*d*K work) rather than the query kernel ``Xq Xs^T``
    (Q*S*d, 4x more at 5-way 5-shot 15-query), and both GEMMs in the orientation with wide
    outputs or a transposed view (4-5x faster than ``Xs^T M`` with its K output columns).
    """
    WT = M.to(Xs.dtype).transpose(1, 2) @ Xs                             # (E, K, d)
    return (Xq.to(Xs.device, Xs.dtype) @ WT.transpose(1, 2)).to(dtype) + b.unsqueeze(1)


def _threads_for(*tensors) -> Optional[int]:
    """One thread for CPU work (see :func:`_torch_threads`), unchanged on accelerators."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            return None
    return 1


def fit_logreg(X, y, num_classes: int, C: float = 1.0, max_iter: int = 1000,
               tol: float = 1e-4, dtype: torch.dtype = torch.float64,
               hessian_dtype: torch.dtype = torch.float32, solver: str = "newton-cg"
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    with _torch_threads(_threads_for(X)):
        return _fit_logreg_impl(X, y, num_classes, C=C, max_iter=max_iter, tol=tol, dtype=dtype,
                                hessian_dtype=hessian_dtype, solver=solver)


def fit_logreg_gram(G, y, num_classes: int, C: float = 1.0, max_iter: int = 1000,
                    tol: float = 1e-4, hessian_dtype: torch.dtype = torch.float32,
                    solver: str = "newton-cg") -> Tuple[torch.Tensor, torch.Tensor]:
    with _torch_threads(_threads_for(G)):
        return _fit_logreg_gram_impl(G, y, num_classes, C=C, max_iter=max_iter, tol=tol,
                                     hessian_dtype=hessian_dtype, solver=solver)


def fit_predict_logreg(Xs, ys, Xq, num_classes: int, C: float = 1.0, max_iter: int = 1000,
                       tol: float = 1e-4, dtype: torch.dtype = torch.float64,
                       solver: str = "newton-cg") -> torch.Tensor:
    """Fit on (Xs, ys) and predict Xq, per episode: labels (E, Q) (argmax of
    :func:`fit_predict_proba_logreg`'s logits; first maximum on ties, like scikit-learn)."""
    return _fit_logits_logreg_impl(Xs, ys, Xq, num_classes, C=C, max_iter=max_iter,
                                   tol=tol, dtype=dtype, solver=solver).argmax(dim=-1)


def fit_predict_proba_logreg_sets(feature_sets, ys, num_classes: int, C: float = 1.0,
                                  max_iter: int = 1000, tol: float = 1e-4,
                                  dtype: torch.dtype = torch.float64) -> list:
    """:func:`fit_predict_proba_logreg` for several feature sets of the same episodes.

    ``feature_sets``: ``[(Xs (E, S, d_i), Xq (E, Q, d_i)), ...]`` sharing the support labels
    ``ys`` (E, S); returns one (E, Q, K) probability tensor per set. When every set has
    d_i > S (the SCL protocol: 640-d pooled and 2,560-d spatial features) all the problems
    go through one batched solve of the (E * sets) Gram matrices, and the queries are scored
    through ``W = Xs^T M`` (Q*d*K work instead of the Q*S*d of the query kernel).
    """
    sets = [(_as_tensor(a), _as_tensor(b)) for a, b in feature_sets]
    S = sets[0][0].shape[1] if sets else 0
    if not sets or any(Xs.shape[2] <= S or Xs.shape[1] != S for Xs, _ in sets):
        return [fit_predict_proba_logreg(Xs, ys, Xq, num_classes, C=C, max_iter=max_iter, tol=tol,
                                         dtype=dtype) for Xs, Xq in sets]
    E = sets[0][0].shape[0]
    y = _as_tensor(ys).long().to(sets[0][0].device)
    G = torch.cat([(Xs @ Xs.transpose(1, 2)).to(dtype) for Xs, _ in sets])
    with _torch_threads(_threads_for(G)):
        M, b = _fit_logreg_gram_impl(G, y.repeat(len(sets), 1), num_classes, C=C,
                                     max_iter=max_iter, tol=tol)
    out = []
    for i, (Xs, Xq) in enumerate(sets):
        logits = _query_logits(Xs, Xq, M[i * E:(i + 1) * E], b[i * E:(i + 1) * E], dtype)
        out.append(torch.softmax(logits, dim=-1))
    return out


def fit_predict_proba_logreg(Xs, ys, Xq, num_classes: int, C: float = 1.0, max_iter: int = 1000,
                             tol: float = 1e-4, dtype: torch.dtype = torch.float64,
                             solver: str = "newton-cg") -> torch.Tensor:
    """Fit on (Xs, ys), return the query class probabilities (E, Q, K), as scikit-learn's
    ``predict_proba`` (softmax of the logits; for K == 2 the binary model's sigmoid)."""
    return torch.softmax(_fit_logits_logreg_impl(Xs, ys, Xq, num_classes, C=C, max_iter=max_iter,
                                                 tol=tol, dtype=dtype, solver=solver), dim=-1)


fit_logreg.__doc__ = _fit_logreg_impl.__doc__
fit_logreg_gram.__doc__ = _fit_logreg_gram_impl.__doc__


def decision_function(X, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits (E, Q, K) of query features X (E, Q, d)."""
    X = _as_tensor(X, W.dtype).to(W.device)
    return X @ W + b.unsqueeze(1)


def predict(X, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Predicted labels (E, Q): argmax of the logits (first maximum on ties, like sklearn)."""
    return decision_function(X, W, b).argmax(dim=-1)


def logreg_objective(X, y, W, b, C: float = 1.0) -> torch.Tensor:
    """Per-episode ``C * sum_i CE_i + 0.5 ||W||^2`` (float64), for comparing solutions."""
    W = _as_tensor(W, torch.float64)
    b = _as_tensor(b, torch.float64)
    X = _as_tensor(X, torch.float64)
    y = _as_tensor(y).long()
    logp = torch.log_softmax(X @ W + b.unsqueeze(1), dim=-1)
    ce = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(dim=1)
    return C * ce + 0.5 * W.pow(2).sum(dim=(1, 2))


class BatchedLogisticRegression:
    """Estimator-style wrapper: ``fit(X (E,S,d), y (E,S))`` then ``predict(Xq (E,Q,d))``."""

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4,
                 dtype: torch.dtype = torch.float64, hessian_dtype: torch.dtype = torch.float32):
        self.C, self.max_iter, self.tol, self.dtype = C, max_iter, tol, dtype
        self.hessian_dtype = hessian_dtype
        self.coef_: Optional[torch.Tensor] = None
        self.intercept_: Optional[torch.Tensor] = None

    def fit(self, X, y, num_classes: Optional[int] = None) -> "BatchedLogisticRegression":
        y_t = _as_tensor(y).long()
        K = int(num_classes) if num_classes is not None else int(y_t.max()) + 1
        self.coef_, self.intercept_ = fit_logreg(X, y_t, K, C=self.C, max_iter=self.max_iter,
                                                 tol=self.tol, dtype=self.dtype,
                                                 hessian_dtype=self.hessian_dtype)
        return self

    def decision_function(self, X) -> torch.Tensor:
        if self.coef_ is None:
            raise RuntimeError("call fit() first")
        return decision_function(X, self.coef_, self.intercept_)

    def predict_proba(self, X) -> torch.Tensor:
        return torch.softmax(self.decision_function(X), dim=-1)

    def predict(self, X) -> torch.Tensor:
        return self.decision_function(X).argmax(dim=-1)


# --------------------------------------------------------------------------- reference
def _to_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _sklearn_model(C: float, max_iter: int, tol: float):
    from sklearn.linear_model import LogisticRegression
    # No ``multi_class``: it was removed in scikit-learn 1.7 (multinomial is the default
    # for >= 3 classes); the reference implementations that pass it fail on current versions.
    return LogisticRegression(C=C, max_iter=max_iter, tol=tol)


def sklearn_logreg_fit(Xs, ys, num_classes: int, C: float = 1.0, max_iter: int = 1000,
                       tol: float = 1e-4) -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn, one episode at a time; returns (W (E,d,K), b (E,K)) like fit_logreg.

    Assumes every class 0..K-1 appears in each episode's support set.
    """
    Xs, ys = _to_numpy(Xs), _to_numpy(ys)
    E, _, d = Xs.shape
    W = np.zeros((E, d, num_classes))
    b = np.zeros((E, num_classes))
    for e in range(E):
        clf = _sklearn_model(C, max_iter, tol).fit(Xs[e], ys[e])
        if num_classes == 2:
            W[e, :, 1], b[e, 1] = clf.coef_[0], clf.intercept_[0]
        else:
            W[e], b[e] = clf.coef_.T, clf.intercept_
    return W, b


def sklearn_logreg_predict_proba(Xs, ys, Xq, C: float = 1.0, max_iter: int = 1000,
                                 tol: float = 1e-4) -> np.ndarray:
    """Reference: ``LogisticRegression(C, max_iter, tol).fit(...).predict_proba(Xq)`` per
    episode -> (E, Q, K) float64 numpy (K = number of classes in the support set)."""
    Xs, ys, Xq = _to_numpy(Xs), _to_numpy(ys), _to_numpy(Xq)
    out = []
    for e in range(Xs.shape[0]):
        out.append(_sklearn_model(C, max_iter, tol).fit(Xs[e], ys[e]).predict_proba(Xq[e]))
    return np.stack(out) if out else np.zeros(Xq.shape[:2] + (0,))


def sklearn_logreg_predict(Xs, ys, Xq, C: float = 1.0, max_iter: int = 1000,
                           tol: float = 1e-4) -> np.ndarray:
    """Reference: fit ``LogisticRegression(C, max_iter, tol)`` per episode, predict queries.

    Xs (E,S,d), ys (E,S), Xq (E,Q,d) -> predicted labels (E,Q) as int64 numpy.
    """
    Xs, ys, Xq = _to_numpy(Xs), _to_numpy(ys), _to_numpy(Xq)
    out = np.empty(Xq.shape[:2], dtype=np.int64)
    for e in range(Xs.shape[0]):
        clf = _sklearn_model(C, max_iter, tol).fit(Xs[e], ys[e])
        out[e] = clf.predict(Xq[e])
    return out
