"""Synthetic trial histories shaped like the recipe's, for figure tests and the landscape benchmark.

No training: the loss falls faster with the learning rate, overfits slowly at the end, and
diverges above about 0.3, as the recipe's MNIST model does; a share of trials is pruned.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["synthetic_history", "synthetic_trials"]


def synthetic_history(lr: float, epochs: int, rng: np.random.Generator, *, stop: int | None = None) -> dict:
    """A ``history`` user attribute for a trial at ``lr`` that ran ``stop or epochs`` epochs."""
    n = stop or epochs
    e = np.arange(1, n + 1)
    distance = abs(math.log10(lr) + 3.0)  # the best rate is about 1e-3
    floor = 0.03 + 0.08 * distance ** 2
    speed = min(1.0, 30 * lr)
    train = floor * 0.5 + (2.3 - floor) * np.exp(-speed * e) + rng.normal(0, 0.004, n).clip(-0.003)
    val = floor + (2.3 - floor) * np.exp(-speed * e) + 0.0004 * e * speed + rng.normal(0, 0.006, n).clip(-0.005)
    acc = np.clip(1 - val / 2.5, 0.1, 0.995)
    history = {"loss": train, "val_loss": val, "accuracy": np.clip(1 - train / 2.5, 0.1, 1), "val_accuracy": acc}
    out = {k: [round(float(x), 6) for x in v] for k, v in history.items()}
    if lr > 0.3:  # diverges: the last epoch's loss is not finite (stored as null)
        for k in out:
            out[k][-1] = None
    return out


def synthetic_trials(n: int, epochs: int, *, seed: int = 0, pruned_share: float = 0.4,
                     recipe=(0.1, 0.01, 0.0001), lr_min: float = 1e-5, lr_max: float = 1.0):
    """``n`` finished ``optuna.trial.FrozenTrial`` objects numbered 0.. (recipe rates first), as hpsearch writes them."""
    import optuna

    rng = np.random.default_rng(seed)
    dist = optuna.distributions.FloatDistribution(lr_min, lr_max, log=True)
    trials = []
    for i in range(n):
        is_recipe = i < len(recipe)
        lr = recipe[i] if is_recipe else float(10 ** rng.uniform(math.log10(lr_min), math.log10(lr_max)))
        pruned = not is_recipe and rng.random() < pruned_share
        stop = int(rng.integers(1, max(2, epochs // 2))) if pruned else (1 + int(rng.integers(0, epochs)) if lr > 0.3 else None)
        history = synthetic_history(lr, epochs, rng, stop=stop)
        accs = [a for a in history["val_accuracy"] if a is not None]
        attrs = {"history": history, "epochs_run": len(history["loss"]), "source": "recipe" if is_recipe else "sampler"}
        state = optuna.trial.TrialState.PRUNED if pruned or not accs else optuna.trial.TrialState.COMPLETE
        trials.append(optuna.trial.create_trial(
            params={"learning_rate": lr}, distributions={"learning_rate": dist},
            value=max(accs) if state == optuna.trial.TrialState.COMPLETE else None,
            state=state, user_attrs=attrs,
        ))
    for number, t in enumerate(trials):
        t.number = number
    return trials
