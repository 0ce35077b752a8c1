"""Promotion: a version serves only when it answers the held-out questions better than the one serving.

Both sides are judged on the same held-out examples: the candidate's own split (for `base` as the
candidate, the serving version's split). Figures recorded at tune time are used where they exist (the
base and the tuned version of that split); a third version is answered on that split at activation time
and its figures are stored with the candidate, so the comparison is made once. `--force` activates
anyway; the event records that the gate was overridden, the verdict and the reason given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.tuning import gate
from bot.tuning.registry import BASE, GateRefusedError, ModelRegistry, ModelVersion, RegistryError

# (adapter file or None for the base, model id, held-out examples) -> held-out figures
Evaluate = Callable[[Path | None, str, Sequence[Any]], dict[str, Any]]


def judge(registry: ModelRegistry, candidate: str, evaluate: Evaluate) -> gate.Verdict:
    """Is `candidate` better than the serving version on held-out answers?"""
    incumbent = registry.active_name()
    if candidate == incumbent:
        raise RegistryError(f"{candidate} is already the active version")
    owner = registry.get(candidate if candidate != BASE else incumbent)  # whose held-out split is used
    return gate.compare(_figures(registry, owner, candidate, evaluate), _figures(registry, owner, incumbent, evaluate))


def _figures(registry: ModelRegistry, owner: ModelVersion, name: str, evaluate: Evaluate) -> dict[str, Any]:
    """Held-out figures of version `name` on `owner`'s split (recorded, or measured now and recorded)."""
    metrics = owner.metrics
    if name == BASE:
        return dict(metrics.get("base") or {})
    if name == owner.version:
        return dict(metrics.get("tuned") or {})
    other = registry.get(name)
    if other.data_hash == owner.data_hash and other.metrics.get("tuned"):
        return dict(other.metrics["tuned"])  # the same examples: its own recorded figures
    cross = dict(metrics.get("cross") or {})
    if name not in cross:
        from bot.tuning.pipeline import recorded_gate_examples

        examples = recorded_gate_examples(registry.data_dir, owner)
        cross[name] = evaluate(registry.adapter_file(other), other.model_id, examples)
        registry.update_metrics(owner.version, {**metrics, "cross": cross})
    return dict(cross[name])


def activate(
    registry: ModelRegistry, version: str, *, actor: str, force: bool, reason: str, evaluate: Evaluate
) -> gate.Verdict:
    """Activate `version` if the gate lets it through (or `force`); GateRefusedError says why not."""
    verdict = judge(registry, version, evaluate)
    if not verdict.better and not force:
        raise GateRefusedError(
            f"{version} is not better than {registry.active_name()} on held-out answers: "
            f"{'; '.join(verdict.reasons)} (use --force to activate it anyway; that is recorded)"
        )
    detail = "; ".join(verdict.reasons)
    if not verdict.better:
        detail = f"FORCED past the held-out gate ({reason or 'no reason given'}): {detail}"
    elif reason:
        detail = f"{reason}: {detail}"
    registry.activate(version, actor=actor, forced=force and not verdict.better, detail=detail)
    return verdict


def version_rows(registry: ModelRegistry) -> list[dict[str, Any]]:
    """`models list`: the base and every tuned version, with held-out figures and which one serves."""
    versions = registry.versions()
    active = registry.active_name()
    latest_base = next((v.metrics.get("base") for v in reversed(versions) if v.metrics.get("base")), None)
    base_model = versions[-1].base_model if versions else ""
    rows: list[dict[str, Any]] = [{
        "version": BASE, "base": base_model, "model_id": base_model, "active": active == BASE,
        "created_at": "", "metrics": {"heldout": latest_base} if latest_base else None,
    }]  # fmt: skip
    for v in versions:
        rows.append({
            "version": v.version, "base": v.base_model, "model_id": v.model_id, "active": active == v.version,
            "created_at": v.created_at, "metrics": v.metrics, "data_hash": v.data_hash,
            "adapter": v.adapter_path, "adapter_sha256": v.adapter_sha256, "base_sha256": v.base_sha256,
            "train_examples": v.train_examples, "heldout_examples": v.heldout_examples, "settings": v.settings,
        })  # fmt: skip
    return rows
