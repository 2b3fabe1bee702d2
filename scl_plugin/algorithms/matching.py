"""Matching Networks (Vinyals et al., NeurIPS 2016), episodic, on any backbone.

A query's class distribution is an attention-weighted vote of the support labels, the
attention being a softmax over cosine similarities between the query and support embeddings::

    a(q, i) = softmax_i cos(f(q), g(x_i)),      P(y = c | q) = sum_{i: y_i = c} a(q, i)

and the loss is the query NLL, averaged over a meta-batch of tasks. Without full-context
embeddings (the default) ``f = g = backbone``. With ``fce=True`` the support embeddings are
read by a bidirectional LSTM (``g(x_i) = g'(x_i) + h_fw_i + h_bw_i``) and each query embedding
is refined by ``fce_steps`` steps of an attention LSTM over them (the paper's Appendix A).
learn2learn has no Matching Networks module, hence this short one::

    method = MatchingNetwork(backbone, ways=5, shots=1, queries=15)
    loss, metrics = method.loss(tasks)                  # tasks: [(x, y), ...] episodes
    logits = method.adapt(support_x, support_y)(query_x)  # log-probabilities
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data import split_support_query
from ..evaluation.features import model_device


class MatchingNetwork(nn.Module):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, fce: bool = False,
                 fce_steps: int = 1):
        super().__init__()
        self.backbone = backbone
        self.ways, self.shots, self.queries = ways, shots, queries
        self.fce, self.fce_steps = fce, fce_steps
        d = backbone.feature_dim
        if fce:
            self.support_lstm = nn.LSTM(d, d, batch_first=True, bidirectional=True)
            self.query_cell = nn.LSTMCell(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

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

    def log_probs(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                  ways: int) -> torch.Tensor:
        """(n_query, ways) log P(y | query) from support / query embeddings."""
        g = self._support(support)
        f = self._query(query, g)
        att = torch.softmax(F.normalize(f, dim=1) @ F.normalize(g, dim=1).t(), dim=1)
        probs = att @ F.one_hot(support_y, ways).to(att.dtype)
        return probs.clamp_min(1e-12).log()

    def loss(self, tasks: List[Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        xs = torch.cat([x for x, _ in tasks])          # one forward for the meta-batch, as ProtoNet
        emb = self.backbone(xs).split([x.shape[0] for x, _ in tasks])
        losses, accs = [], []
        for e, (_, y) in zip(emb, tasks):
            es, ys, eq, yq = split_support_query(e, y, self.ways, self.shots, self.queries)
            logp = self.log_probs(es, ys, eq, self.ways)
            losses.append(F.nll_loss(logp, yq))
            accs.append((logp.argmax(-1) == yq).float().mean())
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean().detach()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, **_: Any) -> "_MatchingLearner":
        self.eval()
        return _MatchingLearner(self, support_x, support_y)


class _MatchingLearner(nn.Module):
    def __init__(self, net: MatchingNetwork, support_x: torch.Tensor, support_y: torch.Tensor):
        super().__init__()
        self.net, self.device = net, model_device(net)
        self.ways = int(support_y.max()) + 1
        with torch.no_grad():
            self.support, self.support_y = net.backbone(support_x.to(self.device)), support_y.to(self.device)

    @torch.no_grad()
    def forward(self, query_x: torch.Tensor) -> torch.Tensor:
        return self.net.log_probs(self.support, self.support_y, self.net.backbone(query_x.to(self.device)), self.ways)
