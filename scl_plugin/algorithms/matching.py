"""Matching Networks (Vinyals et al., NeurIPS 2016), episodic, on any backbone.

A query's class distribution is an attention-weighted vote of the support labels, the
attention being a softmax over cosine similarities between the query and support embeddings::

    a(q, i) = softmax_i s * cos(f(q), g(x_i)),      P(y = c | q) = sum_{i: y_i = c} a(q, i)

and the loss is the query NLL, averaged over a meta-batch of tasks. ``s`` is a learned scale
(``scale``, initialised at 10 as Meta-Baseline's learnable cosine scale): the paper's raw
cosines (``s = 1``) lie in [0, 1] on ReLU features, so the attention stays nearly uniform (the
largest of 5 weights about 0.27) and the loss cannot fall below about 0.9. ``normalize_query=False``
is easyfsl's and the original code's answer to the same problem: the raw query embedding against
unit support vectors. Without full-context
embeddings (the default) ``f = g = backbone``. With ``fce=True`` the support embeddings are
read by a bidirectional LSTM (``g(x_i) = g'(x_i) + h_fw_i + h_bw_i``) and each query embedding
is refined by ``fce_steps`` steps of an attention LSTM over them (the paper's Appendix A).
learn2learn has no Matching Networks module, hence this short one. Its options live in the
``embed`` section (``embed.fce``, ``embed.fce_steps``); it is trained on episodes.

Example::

    >>> from scl_plugin.backbones import create_backbone
    >>> backbone = create_backbone("conv4", in_chans=1, image_size=28, hidden=8)
    >>> method = MatchingNetwork(backbone, ways=5, shots=1, queries=2, fce=True)     # full-context embeddings
    >>> loss, metrics = method.loss([(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3))])   # one episode
    >>> log_probs = method.adapt(torch.randn(5, 1, 28, 28), torch.arange(5))(torch.randn(3, 1, 28, 28))
    >>> log_probs.exp().sum(-1).allclose(torch.ones(3))
    True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_method
from .base import EpisodicMethod


@register_method("matchingnet", batches="episodes", classifier="native")
class MatchingNetwork(EpisodicMethod):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, fce: bool = False,
                 fce_steps: int = 1, scale: float = 10.0, learn_scale: bool = True,
                 normalize_query: bool = True):
        super().__init__(backbone, ways, shots, queries)
        self.fce, self.fce_steps, self.normalize_query = fce, fce_steps, normalize_query
        scale = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        d = backbone.feature_dim
        if fce:
            self.support_lstm = nn.LSTM(d, d, batch_first=True, bidirectional=True)
            self.query_cell = nn.LSTMCell(d, d)

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        e = cfg.embed
        return super().from_config(cfg, backbone, data, fce=e.fce, fce_steps=e.fce_steps, scale=e.matching_scale,
                                   learn_scale=e.matching_learn_scale, normalize_query=e.matching_normalize_query,
                                   **options)

    def _support(self, g: torch.Tensor) -> torch.Tensor:
        if not self.fce:
            return g
        h, _ = self.support_lstm(g.unsqueeze(0))
        fw, bw = h[0].chunk(2, dim=-1)
        return g + fw + bw

    def _query(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if not self.fce:
            return f
        h, c, r = torch.zeros_like(f), torch.zeros_like(f), torch.zeros_like(f)
        for _ in range(self.fce_steps):
            h, c = self.query_cell(f, (h + r, c))
            h = h + f
            r = torch.softmax(h @ g.t(), dim=1) @ g
        return h

    def task_logits(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                    ways: int) -> torch.Tensor:
        """(n_query, ways) log P(y | query) from support / query embeddings."""
        g = self._support(support)
        f = self._query(query, g)
        att = self.attention(F.normalize(f, dim=1) if self.normalize_query else f, F.normalize(g, dim=1))
        probs = att @ F.one_hot(support_y, ways).to(att.dtype)
        return probs.clamp_min(1e-12).log()

    log_probs = task_logits

    def attention(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(n_query, n_support) attention ``softmax(scale * f @ g.T)`` (unit ``g``; ``f`` as configured)."""
        return torch.softmax(self.scale * (f @ g.t()), dim=1)

    def task_loss(self, logits: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
        """The query NLL (``task_logits`` are already log-probabilities)."""
        return F.nll_loss(logits, query_y)
