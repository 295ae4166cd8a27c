"""Short teaching versions of the book's three central pieces, each a few lines long, for reading first.

The chapters show these with ``literalinclude`` before the full implementations they stand for, and
``tests/test_teaching.py`` proves each equal to its full counterpart on a grid of inputs, so the short version
is never a simplification that drifted:

    ce_gppo_weight      F(r, Â) of CE-GPPO                   = losses.gradient_weight(..., "ce_gppo")
    ce_gppo_loss        the r / sg(r) loss, token-mean       = losses.ce_gppo (value and gradient)
    softmax_update      one SGD step of one softmax's logits = toy.demos.single_softmax_update's delta
    token_bandit_step   one rollout batch of the token bandit = toy.bandit.simulate, step by step
    lm_rl_step          one RL step of a language model       = lm.trainer.Trainer.train_step, instruments off

They skip what the full versions add: input validation, masks, the clamp of log r, dual clip, aggregation modes,
batching over seeds. No defaults either: the method's defaults live in ``losses.METHODS`` only.
"""

from __future__ import annotations

import numpy as np
import torch

from .advantages import group_advantages, zero_variance_groups


def ce_gppo_weight(r, adv, *, eps_low, eps_high, beta1, beta2):
    """F(r, Â): how much of Â·∇log π one token's gradient carries under CE-GPPO (numpy, broadcast)."""
    r, adv = np.asarray(r, dtype=float), np.asarray(adv, dtype=float)
    below = (r < 1 - eps_low) & (adv < 0)  # PPO clips these away (F = 0) ...
    above = (r > 1 + eps_high) & (adv > 0)  # ... and these
    return np.where(below, beta1 * (1 - eps_low),  # CE-GPPO keeps a constant weight instead
                    np.where(above, beta2 * (1 + eps_high),
                             r * np.ones_like(adv)))  # inside the interval: the plain ratio


def ce_gppo_loss(logp, old_logp, adv, *, eps_low, eps_high, beta1, beta2):
    """The CE-GPPO loss to minimise, token-mean over N tokens. ``logp, old_logp, adv: (N,) -> ()``."""
    r = torch.exp(logp - old_logp)
    below = (r < 1 - eps_low) & (adv < 0)
    above = (r > 1 + eps_high) & (adv > 0)
    keep = r / r.detach()  # 1 in the forward pass; gradient ∇r / r = ∇log π
    surrogate = torch.where(below, beta1 * (1 - eps_low) * keep,
                            torch.where(above, beta2 * (1 + eps_high) * keep, r))
    return -(surrogate * adv).mean()


def log_softmax(z):
    """log π of each row of logits ``z``, computed stably. ``(..., K) -> (..., K)``."""
    shifted = z - z.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def softmax_update(logits, token, weight, adv, lr):
    """One SGD step on one kept token: Δz = η·F·Â·(onehot(a) − π), since ∇_z log π_a = onehot(a) − π.

    ``logits: (V,)``, ``token`` = a, ``weight`` = F. Returns Δz, shape (V,)."""
    pi = np.exp(log_softmax(np.asarray(logits, dtype=float)))
    onehot = np.eye(len(pi))[token]
    return lr * weight * adv * (onehot - pi)


def token_bandit_step(z, rng, weight, *, groups, group_size, minibatches, epochs, lr, relevant, success_low,
                      success_high):
    """One rollout batch of chapter 3's token bandit, for one seed. ``z: (L, K)`` logits -> new ``(L, K)``.

    ``weight(r, Â)`` is the method's F; ``rng`` a numpy Generator; token 0 is the rewarded choice.
    """
    L, K = z.shape
    B, m, positions = groups * group_size, groups * group_size // minibatches, np.arange(L)
    old_logpi = log_softmax(z)  # (L, K): the policy that samples the batch
    # 1. sample B sequences, one token per position (inverse CDF), and reward each with probability
    #    success_low + (success_high − success_low) × (fraction of the relevant positions holding token 0)
    u = rng.random((B, L))
    tokens = np.minimum((np.exp(old_logpi).cumsum(-1)[None] < u[..., None]).sum(-1), K - 1)  # (B, L)
    right = (tokens[:, :relevant] == 0).mean(-1)  # (B,)
    reward = (rng.random(B) < success_low + (success_high - success_low) * right).astype(float)
    # 2. group advantages Â = (R − group mean) / (group std + 1e-6), one per sequence
    grouped = reward.reshape(groups, group_size)
    adv = ((grouped - grouped.mean(1, keepdims=True)) / (grouped.std(1, ddof=1, keepdims=True) + 1e-6)).ravel()
    old_logp = old_logpi[positions, tokens]  # (B, L)
    # 3. epochs × minibatches plain SGD steps on the token-mean loss; ∂loss/∂log π = −F·Â / (m·L)
    for _ in range(epochs):
        for k in range(minibatches):
            rows = slice(k * m, (k + 1) * m)
            logpi = log_softmax(z)
            r = np.exp(logpi[positions, tokens[rows]] - old_logp[rows])  # (m, L)
            coef = weight(r, adv[rows, None]) * adv[rows, None] / (m * L)  # (m, L)
            pushed = np.stack([np.bincount(tokens[rows, t], coef[:, t], K) for t in positions])  # (L, K)
            z = z + lr * (pushed - np.exp(logpi) * coef.sum(0)[:, None])  # Δz = η Σ coef·(onehot(a) − π)
    return z


def response_logp(model, prompt, response, temperature):
    """log π(each response token | the prompt and the tokens before it), one row at a time. ``-> (R,)``"""
    logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1:-1] / temperature  # (R, V)
    return logits.log_softmax(-1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def pad(rows):
    """Stack rows of different lengths into ``(b, R)``, zeros after each row's end."""
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


def lm_rl_step(model, optimizer, prompts, sample, reward, loss_fn, hyper, *, group_size, mini_batches, epochs,
               max_grad_norm, temperature, shuffle):
    """One RL step of chapter 4's trainer with every instrument off. ``prompts``: P token lists;
    ``sample(prompts, G)``: P·G response token lists, prompt-major; ``reward(responses)``: P·G rewards;
    ``loss_fn(logp, old_logp, adv, mask, **hyper)``: a loss of ``losses.METHODS``; ``shuffle``: a torch Generator.
    Returns the loss of each optimizer step."""
    # 1. sample G responses per prompt, grade them
    responses = sample(prompts, group_size)
    rewards = torch.tensor(reward(responses), dtype=torch.float32)
    # 2. group advantages Â = (R − group mean) / (group std + 1e-6); a group of equal rewards teaches nothing
    adv = group_advantages(rewards, group_size)
    keep = (~zero_variance_groups(rewards, group_size)).nonzero()[:, 0].tolist()
    rows = [(prompts[i // group_size], responses[i], adv[i]) for i in keep]
    # 3. π_old: the log-probs of the kept responses under the policy that sampled them, without gradient
    model.eval()
    with torch.no_grad():
        old = [response_logp(model, p, r, temperature) for p, r, _ in rows]
    model.train()
    # 4. epochs × mini-batches in a shuffled order: the loss on the padded mini-batch, backward, clip, AdamW step
    losses = []
    for _ in range(epochs):
        for mini in torch.randperm(len(rows), generator=shuffle).tensor_split(min(mini_batches, len(rows))):
            logp = pad([response_logp(model, rows[i][0], rows[i][1], temperature) for i in mini.tolist()])
            old_logp = pad([old[i] for i in mini.tolist()])
            mask = pad([torch.ones(len(rows[i][1])) for i in mini.tolist()])
            loss = loss_fn(logp, old_logp, torch.stack([rows[i][2] for i in mini.tolist()]), mask, **hyper)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
    return losses


__all__ = ["ce_gppo_loss", "ce_gppo_weight", "lm_rl_step", "log_softmax", "pad", "response_logp", "softmax_update",
           "token_bandit_step"]
