"""Ablation of SuperLoss's automatic λ: the rule shipped as ``lam="auto"`` against the others tried.

Every rule reads λ (and here nothing else: τ is the suite's, log C for classification) from running
statistics of the per-sample losses, updated once per training step like τ's EMA (weight 0.9):

- ``auto``: the shipped rule, :class:`superloss.SuperLoss` with ``lam="auto"`` —
  λ = 1/L'(τ), L the log-likelihood ratio of a high- and a low-loss group (running two-means split),
  kept at least S/(2e), S the root mean square of ℓ − τ;
- ``auto-no-floor``: the same without that floor (λ ≥ 10⁻⁶·S);
- ``auto-within-floor``: the same with the floor measured within the groups, S_w/(2e),
  S_w² = π_l·v_l + π_h·v_h: the spread of the losses about their own group's mean, leaving out the
  fitted group's distance below τ (those losses are at σ*'s cap e whatever λ);
- ``held-ratio``: :class:`superloss.SuperLoss` with ``lam="auto-hold"`` (no floor with this
  constant τ): λ_t = 1/L'(τ) never allowed to relax against the low group's distance below τ —
  q_t = λ_t/(τ − μ_l) is dimensionless, q* is its running minimum over training steps, and
  λ = min(λ_t, q*·(τ − μ_l)). The traces show λ_t rising while the network memorises (mislabelled
  samples join the low group and widen it); q* keeps the sharpness the low group reached before
  that. Scale-free, no time scale;
- ``held-posterior``: ``held-ratio`` with λ_t/(2·P(high | τ)), the mixture's posterior at τ with
  the groups' shares as priors (milder where the high group is small);
- ``held-global``: ``held-ratio`` with q read from the groups averaged over every training step so
  far (as τ = "global" averages the losses), so that a dip of a few steps cannot set q*;
- ``held-rms``: ``held-ratio`` with q = λ_t/S, S the root mean square of ℓ − τ, in place of the
  low group's distance below τ (which shrinks when a burst of misfit samples joins the low group,
  tightening λ exactly then; S grows then);
- ``held-absolute``: λ = min(λ_t, running minimum of λ_t) — the hold in loss units (scale-free too:
  λ_t scales with the losses);
- ``held-share``: ``held-ratio`` where the cap only comes from steps whose high group was at least
  as large as now (q* kept per percent of the high group's share): memorisation shrinks the high
  group, while a burst of misfits grows it and then meets the milder ratio of earlier training;
- ``gamma``: 1/L'(τ) with each group a gamma distribution fitted by its moments instead of a
  Gaussian (per-sample losses are skewed: Arazo et al., ICML 2019, fit a beta mixture for that
  reason): the low group's term becomes its tail's decay rate at τ, not its distance in variances,
  so a compact fitted group no longer makes λ tiny; kept at least S/(2e) as ``auto``;
- ``gamma-no-floor``: the same without the floor;
- ``held-gamma``: ``held-ratio`` with the gamma groups' λ_t;
- ``held-unit-cap``: ``held-ratio`` with σ* capped at 1 (a fitted sample steps as with the plain
  loss, not up to e times as far);
- ``held-normalized``: ``held-ratio`` divided by the batch's own mean σ* (the weights average one
  in every batch);
- ``held-normalized-ema``: the same, divided by an EMA (0.9) of the earlier batches' mean σ* — what
  ``SuperLoss(lam="auto-hold", normalize=True)`` ships (there, the first batch is not divided);
- ``auto-normalized``: ``auto`` divided by the batch's own mean σ*;
- ``low-slope``: the same groups, only the low group's term: λ = v_l / (τ − μ_l);
- ``tied-fisher``: a two-Gaussian mixture with one shared variance v fitted by online EM (soft
  responsibilities), λ = v / (μ_h − μ_l), the inverse slope of its log-likelihood ratio;
- ``posterior-ratio``: two-means groups; λ such that σ* at the high group's mean equals e times the
  ratio of the posterior probabilities of the low group at the two means (equal-variance model);
- ``std``: λ = (e/2)·std(ℓ), so that the cap σ* = e starts one standard deviation below τ;
- ``default``: the suite's default as shipped, ``SuperLoss(lam="auto-hold", normalize=True)``
  (with its wait for the losses to leave τ), for the rule below;
- ``fitted-wait``: the same, but the wait also needs a fitted low group, its mean nearer to 0
  than to τ (μ_l < τ − μ_l) — tried after 0.4.0 and not shipped (docs/results.md, "After 0.4.0");
- ``fixed``: a constant λ (``--lams``), for reference.

Run (from a checkout, after ``pip install -e ".[bench]"``):

    python experiments/auto_lambda_ablation.py --dataset digits --noise 0,0.2,0.4,0.6 --seeds 3 \\
        --out superloss-results/ablation-digits --jobs 2

Since 0.4.0 the rules built on the shipped module (``auto``, ``held-*``, ``gamma*`` and their kin)
wait, as the shipped modes do, for the losses to leave τ before they weigh anything; the tables of
docs/results.md that this script made were measured before that (each says with which version).

It trains each rule × noise rate × seed through the suite (resumable: finished runs are kept in
``OUT/results.jsonl``) and prints, per rule and noise rate, the test accuracy at the epoch chosen on
the noisy validation labels, at the last epoch, and at the best epoch (a test-set oracle), mean ±
std over seeds. docs/results.md quotes its tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import superloss.auto_lambda
from superloss import SuperLoss
from superloss.auto_lambda import (
    _groups,
    group_sums,
    held_lambda,
    lambda_from_groups,
    left_tau,
    rms_about,
)
from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput
from superloss.bench.options import option
from superloss.bench.presets import Sweep
from superloss.bench.results import append_result, finished_keys, load_results, results_path
from superloss.functional import super_loss_with_confidence
from superloss.scalar_math import TENSORS

RULES = (
    "auto",
    "auto-no-floor",
    "auto-within-floor",
    "held-ratio",
    "held-posterior",
    "held-global",
    "held-rms",
    "held-absolute",
    "held-share",
    "gamma",
    "gamma-no-floor",
    "held-gamma",
    "held-unit-cap",
    "held-normalized",
    "held-normalized-ema",
    "auto-normalized",
    "low-slope",
    "tied-fisher",
    "posterior-ratio",
    "std",
    "default",
    "fitted-wait",
    "fixed",
)
NO_FLOOR = 1e-6  # auto-no-floor's λ ≥ NO_FLOOR·S
NAME = "auto-lambda-ablation"
# The rules that read the shipped groups' unfloored 1/L'(τ).
UNFLOORED = ("auto-no-floor", "auto-within-floor", "held-posterior", "held-global", "held-rms",
             "held-absolute", "held-share", "gamma", "gamma-no-floor", "held-gamma")  # fmt: skip
SHARE_BINS = 100  # held-share: q* per percent of the high group's share
PAST_WEIGHT = 0.9


@dataclass(frozen=True)
class AblationHyperParameters:
    rule: str = option("auto", "how λ is chosen (module docstring)", choices=RULES)
    lam: float = option(0.25, "λ of the fixed rule", low=0.0, low_open=True)


class Groups:
    """Running per-sample means [1, ℓ, ℓ², h, hℓ, hℓ²] of a two-group split of the losses.

    ``soft`` uses the responsibilities of a two-Gaussian mixture with a shared variance (online EM);
    otherwise h = [ℓ > b], b the midpoint of the group means (online two-means).
    """

    def __init__(self, soft: bool) -> None:
        self.soft = soft
        self.means: Tensor | None = None

    def parameters(self) -> tuple[Tensor, ...]:
        assert self.means is not None
        _, s1, s2, high, h1, h2 = self.means.unbind()
        high = high.clamp(1e-9, 1 - 1e-9)
        low = 1 - high
        mu_h, mu_l = h1 / high, (s1 - h1) / low
        var_h = (h2 / high - mu_h**2).clamp_min(1e-300)
        var_l = ((s2 - h2) / low - mu_l**2).clamp_min(1e-300)
        return low, high, mu_l, mu_h, var_l, var_h, s1, (s2 - s1 * s1).clamp_min(0.0)

    def membership(self, loss: Tensor) -> Tensor:
        if self.means is None:
            return (loss > loss.mean()).double()
        low, high, mu_l, mu_h, var_l, var_h, _, _ = self.parameters()
        if not self.soft:
            return (loss > 0.5 * (mu_l + mu_h)).double()
        shared = low * var_l + high * var_h
        logit = (high / low).log() + (mu_h - mu_l) / shared * (loss - 0.5 * (mu_l + mu_h))
        return torch.sigmoid(logit)

    def update(self, loss: Tensor) -> None:
        x = loss.detach().double().reshape(-1)
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return
        h = self.membership(x)
        batch = torch.stack([torch.ones_like(x), x, x * x, h, h * x, h * x * x]).mean(1)
        previous = self.means
        self.means = (
            batch if previous is None else PAST_WEIGHT * previous + (1 - PAST_WEIGHT) * batch
        )


def fitted_left_tau(means: Any, tau: Any, math_: Any = TENSORS) -> Any:
    """``fitted-wait``: the shipped criterion, and the low group's mean nearer to 0 than to τ."""
    mean_low = _groups(means, math_)[2]
    return left_tau(means, tau, math_) & (mean_low < tau - mean_low)


def within_floor(state: Any) -> Tensor:
    """S_w/(2e) from the shipped groups."""
    low, high, _, _, var_low, var_high = _groups(state.statistics, TENSORS)
    share_high = (high / (low + high).clamp_min(1e-300)).clamp(0.0, 1.0)
    within = ((1 - share_high) * var_low + share_high * var_high).sqrt()
    return within / (2 * math.e)


def low_mean(state: Any) -> Tensor:
    """μ_l of the shipped groups."""
    mean_low: Tensor = _groups(state.statistics, TENSORS)[2]
    return mean_low


def high_posterior(state: Any, tau: float) -> Tensor:
    """P(high | τ) of the shipped groups as a two-Gaussian mixture with their shares as priors."""
    low, high, mu_l, mu_h, var_l, var_h = _groups(state.statistics, TENSORS)
    low, high = low.clamp_min(1e-300), high.clamp_min(1e-300)
    var_l, var_h = var_l.clamp_min(1e-300), var_h.clamp_min(1e-300)
    log_odds = (
        high.log() - low.log()
        - 0.5 * (tau - mu_h) ** 2 / var_h - 0.5 * var_h.log()
        + 0.5 * (tau - mu_l) ** 2 / var_l + 0.5 * var_l.log()
    )  # fmt: skip
    return torch.sigmoid(log_odds)


def gamma_lambda(state: Any, tau: float) -> Tensor:
    """1/L'(τ) with each group a gamma distribution fitted by its moments (shape μ²/v, scale v/μ)
    in place of a Gaussian: −d/dℓ log p_l(τ) = μ_l/v_l − (μ_l²/v_l − 1)/τ and
    d/dℓ log p_h(τ) = (μ_h²/v_h − 1)/τ − μ_h/v_h, each counted where positive (τ beyond the low
    group's mode, short of the high group's)."""
    low, high, mu_l, mu_h, var_l, var_h = _groups(state.statistics, TENSORS)
    var_l, var_h = var_l.clamp_min(1e-300), var_h.clamp_min(1e-300)
    low_term = mu_l / var_l - (mu_l * mu_l / var_l - 1.0) / tau
    high_term = (mu_h * mu_h / var_h - 1.0) / tau - mu_h / var_h
    slope = torch.where(low > 0, low_term.clamp_min(0.0), 0.0)
    slope = slope + torch.where(high > 0, high_term.clamp_min(0.0), 0.0)
    scale = rms_about(state.statistics, torch.tensor(tau, dtype=torch.float64))
    return torch.where(slope * 1e3 * scale > 1.0, 1.0 / slope.clamp_min(1e-300), 1e3 * scale)


def rule_lambda(rule: str, groups: Groups, tau: float) -> Tensor:
    low, high, mu_l, mu_h, var_l, var_h, _, variance = groups.parameters()
    if rule == "low-slope":
        gap = tau - mu_l
        return torch.where(gap > 0, var_l / gap.clamp_min(1e-300), 1e3 * variance.sqrt())
    if rule == "tied-fisher":
        shared = low * var_l + high * var_h
        return shared / (mu_h - mu_l).abs().clamp_min(1e-12)
    if rule == "posterior-ratio":
        shared = low * var_l + high * var_h
        separation = (mu_h - mu_l) ** 2 / shared
        prior = (low / high).log()
        log_ratio = torch.nn.functional.logsigmoid(
            prior - separation / 2
        ) - torch.nn.functional.logsigmoid(prior + separation / 2)
        log_sigma = (1.0 + log_ratio).clamp(max=0.0)  # at most 1 at the high mean
        w = -log_sigma
        beta = 2 * w * w.exp()
        return torch.where(beta > 1e-9, (mu_h - tau).clamp_min(0) / beta.clamp_min(1e-12), 1e9)
    if rule == "std":
        return math.e / 2 * variance.sqrt()
    raise ValueError(rule)


@METHODS.register(NAME)
class AblationMethod(Method):
    """SuperLoss with τ = log C (classification) and λ from one of the ablation's rules."""

    name = NAME
    hyper_parameters = AblationHyperParameters
    tasks = ("classification",)

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        assert context.num_classes is not None
        self.rule = self.hparams.rule
        self.tau = math.log(context.num_classes)
        lam: float | str = float(self.hparams.lam)
        if self.rule.startswith(("auto", "held", "gamma")):
            # held-ratio is the shipped lam="auto-hold" (τ = log C, a constant: no floor).
            held = ("held-ratio", "held-unit-cap", "held-normalized", "held-normalized-ema")
            lam = "auto-hold" if self.rule in held else "auto"
        if self.rule in ("default", "fitted-wait"):
            lam = "auto-hold"
        self.shipped = SuperLoss(tau="log_classes", num_classes=context.num_classes, lam=lam,
                                 reduction="none",
                                 normalize=self.rule in ("default", "fitted-wait"))  # fmt: skip
        if self.rule in UNFLOORED:
            assert self.shipped.auto_lambda is not None
            self.shipped.auto_lambda.lowest_factor = NO_FLOOR
        self.groups = Groups(soft=self.rule == "tied-fisher")
        self.held = torch.tensor(float("inf"), dtype=torch.float64)  # held-*'s q*
        self.mean_weight: Tensor | None = None  # held-normalized-ema: running mean of σ*
        self.by_share = torch.full((SHARE_BINS,), math.inf, dtype=torch.float64)  # held-share
        self.cumulative: Tensor | None = (
            None  # held-global: Σ over steps of n·[1, ℓ, ℓ², h, hℓ, hℓ²]
        )

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        loss = self.context.base_loss(outputs, targets)
        if self.rule in ("auto", "auto-no-floor", "held-ratio", "fixed", "default"):
            values = self.shipped(loss)
            sigma = self.shipped.last_confidence
        elif self.rule == "fitted-wait":
            # The shipped module with its wait's criterion swapped for this call only (runs in a
            # worker are sequential).
            superloss.auto_lambda.left_tau = fitted_left_tau
            try:
                values = self.shipped(loss)
            finally:
                superloss.auto_lambda.left_tau = left_tau
            sigma = self.shipped.last_confidence
        elif self.rule == "auto-within-floor":
            self.shipped(loss)  # the shipped groups and λ = 1/L'(τ), unfloored
            assert self.shipped.auto_lambda is not None
            lam = torch.maximum(
                self.shipped.auto_lambda.lam, within_floor(self.shipped.auto_lambda)
            )
            values, sigma = super_loss_with_confidence(loss, self.tau, lam.float().to(loss.device))
        elif self.rule == "held-global":
            assert self.shipped.auto_lambda is not None
            state = self.shipped.auto_lambda
            batch = group_sums(loss.detach(), state.boundary)  # this step's split, as shipped
            self.shipped(loss)
            lam = state.lam
            if self.training and float(batch[1]) > 0:
                ordered = torch.stack([batch[i] for i in (1, 0, 2, 4, 3, 5)])
                self.cumulative = ordered if self.cumulative is None else self.cumulative + ordered
            if self.cumulative is not None:
                means = self.cumulative / self.cumulative[0]
                tau = torch.tensor(self.tau, dtype=torch.float64)
                whole = lambda_from_groups(means, tau, lowest_factor=0.0)
                _, high, mean_low, _, var_low, var_high = _groups(means, TENSORS)
                spread = (high > 0) & (var_low > 0) & (var_high > 0) & (tau > mean_low)
                if self.training and bool(spread):
                    self.held = torch.minimum(self.held, whole / (tau - mean_low))
            distance = self.tau - low_mean(state)
            if torch.isfinite(self.held) and bool(distance > 0):
                lam = torch.minimum(lam, self.held * distance)
            values, sigma = super_loss_with_confidence(loss, self.tau, lam.float().to(loss.device))
        elif self.rule in ("held-rms", "held-absolute"):
            self.shipped(loss)  # the shipped groups and λ_t = 1/L'(τ), unfloored
            assert self.shipped.auto_lambda is not None
            state = self.shipped.auto_lambda
            lam = state.lam
            tau = torch.tensor(self.tau, dtype=torch.float64)
            unit = rms_about(state.statistics, tau) if self.rule == "held-rms" else torch.ones(())
            _, high, _, _, var_low, var_high = _groups(state.statistics, TENSORS)
            spread = (high > 0) & (var_low > 0) & (var_high > 0)
            if self.training and bool(spread):
                self.held = torch.minimum(self.held, lam / unit)
            if torch.isfinite(self.held):
                lam = torch.minimum(lam, self.held * unit)
            values, sigma = super_loss_with_confidence(loss, self.tau, lam.float().to(loss.device))
        elif self.rule in ("held-normalized", "auto-normalized"):
            values = self.shipped(loss)
            sigma = self.shipped.last_confidence
            values = values / sigma.mean().clamp_min(1e-12)
        elif self.rule == "held-normalized-ema":
            values = self.shipped(loss)
            sigma = self.shipped.last_confidence
            if self.training:
                mean = sigma.double().mean()
                if self.mean_weight is None:
                    self.mean_weight = mean
                values = values / self.mean_weight.float()
                self.mean_weight = PAST_WEIGHT * self.mean_weight + (1 - PAST_WEIGHT) * mean
            elif self.mean_weight is not None:
                values = values / self.mean_weight.float()
        elif self.rule == "held-unit-cap":
            self.shipped(loss)
            sigma = self.shipped.last_confidence.clamp(max=1.0)
            values = sigma.detach() * loss
        elif self.rule in ("gamma", "gamma-no-floor", "held-gamma"):
            self.shipped(loss)  # the shipped groups
            assert self.shipped.auto_lambda is not None
            state = self.shipped.auto_lambda
            lam = gamma_lambda(state, self.tau)
            tau = torch.tensor(self.tau, dtype=torch.float64)
            if self.rule == "gamma":
                lam = torch.maximum(lam, rms_about(state.statistics, tau) / (2 * math.e))
            if self.rule == "held-gamma":  # the shipped hold, on the gamma groups' λ_t
                lam, self.held = held_lambda(lam, state.statistics, tau, self.held, self.training)
            lam = lam.clamp_min(1e-12)
            values, sigma = super_loss_with_confidence(loss, self.tau, lam.float().to(loss.device))
        elif self.rule == "held-share":
            self.shipped(loss)  # the shipped groups and λ_t = 1/L'(τ), unfloored
            assert self.shipped.auto_lambda is not None
            state = self.shipped.auto_lambda
            lam = state.lam
            low, high, mean_low, _, var_low, var_high = _groups(state.statistics, TENSORS)
            share = float(high / (low + high).clamp_min(1e-300))
            level = min(int(share * SHARE_BINS), SHARE_BINS - 1)
            distance = self.tau - mean_low
            if self.training and bool((high > 0) & (var_low > 0) & (var_high > 0) & (distance > 0)):
                self.by_share[level] = torch.minimum(self.by_share[level], lam / distance)
            cap = self.by_share[level:].min()  # steps whose high group was at least as large
            if torch.isfinite(cap) and bool(distance > 0):
                lam = torch.minimum(lam, cap * distance)
            values, sigma = super_loss_with_confidence(loss, self.tau, lam.float().to(loss.device))
        elif self.rule == "held-posterior":
            self.shipped(loss)  # the shipped groups and λ = 1/L'(τ), unfloored
            assert self.shipped.auto_lambda is not None
            state = self.shipped.auto_lambda
            distance = self.tau - low_mean(state)
            lam = state.lam / (2 * high_posterior(state, self.tau)).clamp_min(1e-12)
            if self.training and bool(distance > 0):
                self.held = torch.minimum(self.held, lam / distance)
            if torch.isfinite(self.held) and bool(distance > 0):
                lam = torch.minimum(lam, self.held * distance)
            values, sigma = super_loss_with_confidence(loss, self.tau, lam.float().to(loss.device))
        else:
            if self.training:
                self.groups.update(loss)
            if self.groups.means is None:
                self.groups.update(loss)
            lam = rule_lambda(self.rule, self.groups, self.tau).clamp(1e-8, 1e8).float()
            values, sigma = super_loss_with_confidence(loss, self.tau, lam.to(loss.device))
        return MethodOutput(values, weights=sigma, task_losses=loss.detach())


def _run(config: Any) -> dict[str, Any]:
    from superloss.bench import runner

    return runner.run(config).as_dict()


def configs(args: argparse.Namespace) -> list[Any]:
    noises = tuple(float(n) for n in args.noise.split(","))
    settings = [{"rule": rule} for rule in args.rules.split(",") if rule != "fixed"]
    if "fixed" in args.rules.split(","):
        settings += [{"rule": "fixed", "lam": float(lam)} for lam in args.lams.split(",")]
    settings_ = {"train_size": args.train_size, "noise_type": args.noise_type}
    base = Sweep("classification", args.dataset, (NAME,), noises, args.seeds, settings_)
    return [
        dataclasses.replace(config, method_params=setting)
        for setting in settings
        for config in base.configs()
    ]


def table(out: Path) -> str:
    cells: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in load_results(results_path(out)):
        params = record["config"]["method_params"]
        label = params["rule"] + (f" λ={params['lam']}" if params["rule"] == "fixed" else "")
        for stat in ("selected", "final", "best"):
            cells[(label, record["config"]["noise"])][stat].append(record[stat]["accuracy"])
    noises = sorted({noise for _, noise in cells})
    lines = [
        "| rule | " + " | ".join(f"{n}: selected / final / best (oracle)" for n in noises) + " |"
    ]
    lines.append("|---|" + "---:|" * len(noises))
    for label in sorted({label for label, _ in cells}):
        row = []
        for noise in noises:
            stats = cells.get((label, noise))
            if not stats:
                row.append("–")
                continue
            row.append(" / ".join(_mean_std(stats[stat]) for stat in ("selected", "final", "best")))
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f} ({len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--noise", default="0,0.2,0.4,0.6")
    parser.add_argument("--noise-type", default="symmetric")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--lams", default="0.1,0.25,1.0", help="λ values of the fixed rule")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    path = results_path(out)
    done = finished_keys(path)
    pending = [config for config in configs(args) if config.key() not in done]
    print(f"{len(pending)} runs to go", file=sys.stderr)
    # Spawned workers import this file as their main module: the method is registered there too.
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for count, record in enumerate(pool.map(_run, pending), 1):
            append_result(path, record)
            print(f"[{count}/{len(pending)}] {record['config']['method_params']} "
                  f"noise {record['config']['noise']} seed {record['config']['seed']}: "
                  f"final {record['final']['accuracy']:.2f}", file=sys.stderr)  # fmt: skip
    print(table(out))


if __name__ == "__main__":
    main()
