"""GuardFormer in torch: the cross-encoder, its masked-LM head, and the three training losses.

    L = λ_mlm · L_MLM + λ_alice · L_ALICE++ + λ_ce · L_CE          (GuardFormer, eq. 1)
    L_ALICE++ = CE(f(x + δ), y) + alpha · KL(f(x) ‖ f(x + δ)),   ‖δ_token‖₂ ≤ ε

- classifier: the sentence encoder (BERT, mean pooling, L2 norm, as the embedder guard) and an
  MLP head giving one logit: P(the prompt violates the policy). It is exactly what
  `models.base.bert_onnx.build_model(encoder, head)` builds in ONNX, so serving needs no torch.
- MLM: 15% of the non-special tokens are picked (80% [MASK], 10% a random token, 10% kept) and
  predicted by a masked-LM head (dense + GELU + LayerNorm, decoder tied to the word embeddings).
  The head exists only for training.
- virtual adversarial term: δ starts as a random direction of norm ξ on every token's word
  embedding, takes one power-iteration step along the gradient of the KL divergence, and is
  scaled to norm ε per token; the KL is between the clean and the perturbed Bernoulli outputs,
  the clean side held fixed. The label term of ALICE++ is the cross-entropy on the same
  perturbed input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.train.torch_encoder import SentenceEncoder


@dataclass(frozen=True)
class LossWeights:
    """λ weights of the combined loss and the adversarial settings."""

    mlm: float = 0.1
    alice: float = 1.0
    ce: float = 1.0
    alpha: float = 1.0  # weight of the virtual (KL) term inside ALICE++
    epsilon: float = 1e-2  # largest L2 norm of the perturbation of one token's embedding
    xi: float = 1e-3  # norm of the random start of the power iteration
    mask_prob: float = 0.15


class MlmHead(nn.Module):
    """Dense + GELU + LayerNorm, then logits over the vocabulary with the tied word embeddings."""

    def __init__(self, word_embeddings: nn.Embedding, hidden: int, eps: float) -> None:
        super().__init__()
        self.transform = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.word_embeddings = word_embeddings
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        states = self.norm(F.gelu(self.transform(hidden)))
        logits: torch.Tensor = states @ self.word_embeddings.weight.T + self.bias
        return logits


class GuardFormerModel(nn.Module):
    """Cross-encoder classifier (+ an MLM head for training)."""

    def __init__(self, encoder: SentenceEncoder, head_hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.hidden_size
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, head_hidden), nn.ReLU(), nn.Linear(head_hidden, 1)
        )
        bert = encoder.bert
        self.mlm_head = MlmHead(bert.embeddings.word_embeddings, hidden, bert.config.layer_norm_eps)

    def word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.bert.embeddings.word_embeddings(input_ids)  # type: ignore[no-any-return]

    def hidden_states(
        self,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = self.encoder.bert(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        )
        return out.last_hidden_state  # type: ignore[no-any-return]

    def logits_from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One logit per row: mean pooling, L2 norm, then the head (as the ONNX graph does)."""
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = F.normalize(mean, p=2.0, dim=1, eps=1e-12)
        return self.head(pooled).squeeze(-1)  # type: ignore[no-any-return]

    def forward(
        self,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.hidden_states(attention_mask, input_ids, inputs_embeds)
        return self.logits_from_hidden(hidden, attention_mask)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on the logits (labels 0/1), optionally weighted per row."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), weight=weights)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    mask_prob: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: (masked input ids, targets with -100 where nothing is predicted).

    At least one token per row is picked when the row has any maskable token.
    """
    maskable = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    picked = maskable & (draw < mask_prob)
    # a row with no pick gets its maskable token of lowest draw, so every row teaches something
    lowest = torch.where(maskable, draw, torch.full_like(draw, 2.0)).argmin(dim=1)
    none_picked = ~picked.any(dim=1) & maskable.any(dim=1)
    picked[none_picked, lowest[none_picked]] = True
    targets = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    masked = input_ids.clone()
    masked[picked & (action < 0.8)] = mask_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    swap = picked & (action >= 0.8) & (action < 0.9)
    masked[swap] = random_ids[swap]
    return masked, targets


def mlm_loss(
    model: GuardFormerModel, masked_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the masked-LM head on the picked positions only."""
    hidden = model.hidden_states(attention_mask, input_ids=masked_ids)
    picked = targets != -100
    logits = model.mlm_head(hidden[picked])
    return F.cross_entropy(logits, targets[picked])


def bernoulli_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(Bernoulli(sigmoid(p)) ‖ Bernoulli(sigmoid(q))) over the rows."""
    p = torch.sigmoid(p_logits)
    log_p, log_not_p = F.logsigmoid(p_logits), F.logsigmoid(-p_logits)
    log_q, log_not_q = F.logsigmoid(q_logits), F.logsigmoid(-q_logits)
    kl: torch.Tensor = (p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)).mean()
    return kl


def per_token_unit(delta: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Each token's vector scaled to unit L2 norm; padding positions zero."""
    unit = delta / delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    masked: torch.Tensor = unit * attention_mask.unsqueeze(-1).to(delta.dtype)
    return masked


def adversarial_perturbation(
    model: GuardFormerModel,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    clean_logits: torch.Tensor,
    epsilon: float,
    xi: float,
) -> torch.Tensor:
    """δ with ‖δ_token‖₂ = ε (0 on padding) that (one power step) most changes the prediction."""
    start = per_token_unit(torch.randn_like(embeds), attention_mask) * xi
    start.requires_grad_(True)
    kl = bernoulli_kl(clean_logits.detach(), model(attention_mask, inputs_embeds=embeds.detach() + start))
    (grad,) = torch.autograd.grad(kl, start)
    return (per_token_unit(grad.detach(), attention_mask) * epsilon).detach()


@dataclass
class LossParts:
    total: torch.Tensor
    ce: float
    mlm: float
    alice_label: float
    alice_virtual: float


def guardformer_loss(
    model: GuardFormerModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    weights: LossWeights,
    masking: tuple[torch.Tensor, int, int],
    row_weights: torch.Tensor | None = None,
    auxiliary: bool = True,
) -> LossParts:
    """The combined loss of one batch. `masking` = (special ids, [MASK] id, vocabulary size).

    With `auxiliary` False only the cross-entropy is computed (the trainer can add the MLM and
    ALICE++ terms every few steps, which cuts the cost of a step by about 3x on a CPU).
    """
    embeds = model.word_embeddings(input_ids)
    clean_logits = model(attention_mask, inputs_embeds=embeds)
    ce = ce_loss(clean_logits, labels, row_weights)
    total = weights.ce * ce
    zero = torch.zeros((), device=input_ids.device)
    label_term, virtual_term, mlm = zero, zero, zero
    if auxiliary and weights.alice > 0:
        delta = adversarial_perturbation(
            model, embeds, attention_mask, clean_logits, weights.epsilon, weights.xi
        )
        perturbed = model(attention_mask, inputs_embeds=embeds + delta)
        label_term = ce_loss(perturbed, labels, row_weights)
        virtual_term = bernoulli_kl(clean_logits.detach(), perturbed)
        total = total + weights.alice * (label_term + weights.alpha * virtual_term)
    if auxiliary and weights.mlm > 0:
        special_ids, mask_id, vocab_size = masking
        masked, targets = mask_tokens(
            input_ids, attention_mask, special_ids, mask_id, vocab_size, weights.mask_prob
        )
        mlm = mlm_loss(model, masked, attention_mask, targets)
        total = total + weights.mlm * mlm
    return LossParts(
        total,
        float(ce.detach()),
        float(mlm.detach()),
        float(label_term.detach()),
        float(virtual_term.detach()),
    )
