"""ModelRegistry: the model versions a tune produced, which one serves, and every change of that.

Tables (migrations "firstline.models", this module owns them): `model_versions` (one row per tuned
version: the base model file and its SHA-256, the adapter file and its SHA-256, the data snapshot hash,
the settings, the held-out metrics of base and tuned) and `model_events` (activations and rollbacks, with
who, when, whether the held-out gate was overridden and why). The base model is the implicit version
`base`. Which version serves is the replay of the events: an activation pushes a version, a rollback
pops the last one, so rolling back twice after two activations lands on the base again.

Files live under the data directory (`models/<version>/`); paths are stored relative to it, so a moved
data directory keeps working. A version whose adapter file is missing or changed is refused at load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.errors import BotError
from usage.db import Store
from usage.ledger import iso, utcnow

migrations = Migrations("firstline.models")
BASE = "base"


class RegistryError(BotError):
    """A model-version action is not possible (unknown version, nothing to roll back); shown to operators."""


class GateRefusedError(RegistryError):
    """Activation refused: the version is not better than the serving one on held-out answers."""


@migrations()
def m001_models(db: Database) -> None:
    db.table("model_versions").create(
        {
            "version": str,
            "created_at": str,
            "base_model": str,
            "base_path": str,
            "base_sha256": str,
            "adapter_path": str,
            "adapter_sha256": str,
            "adapter_bytes": int,
            "model_id": str,
            "data_hash": str,
            "train_examples": int,
            "heldout_examples": int,
            "heldout_path": str,
            "settings": str,
            "metrics": str,
            "request_id": str,
        },
        pk="version",
        not_null={"created_at", "base_model", "base_sha256", "adapter_path", "adapter_sha256", "model_id"},
    )
    db.table("model_events").create(
        {
            "id": int,
            "kind": str,
            "version": str,
            "previous": str,
            "forced": int,
            "actor": str,
            "detail": str,
            "created_at": str,
        },  # fmt: skip
        pk="id",
        not_null={"kind", "version", "created_at"},
    )


@dataclass(frozen=True)
class ModelVersion:
    """One tuned version (or the base, with no adapter)."""

    version: str
    base_model: str
    model_id: str
    created_at: str = ""
    base_path: str = ""
    base_sha256: str = ""
    adapter_path: str = ""  # relative to the data directory
    adapter_sha256: str = ""
    adapter_bytes: int = 0
    data_hash: str = ""
    train_examples: int = 0
    heldout_examples: int = 0
    heldout_path: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelVersion:
        data: dict[str, Any] = {k: v for k, v in row.items() if k in cls.__dataclass_fields__ and v is not None}
        data["settings"] = json.loads(row.get("settings") or "{}")
        data["metrics"] = json.loads(row.get("metrics") or "{}")
        return cls(**data)

    @property
    def is_base(self) -> bool:
        return self.version == BASE


class ModelRegistry(Store):
    """Model versions and which one serves."""

    def __init__(self, target: Path | str, data_dir: Path | None = None) -> None:
        """`target`: the shared store (SQLite file or PostgreSQL URL); `data_dir`: where this host keeps the
        adapter files (default: the SQLite file's directory). The versions and which one serves are shared by
        every host; each host keeps the files, checked against their recorded SHA-256 before serving."""
        super().__init__(target, migrations)
        if data_dir is None:
            if self.postgres:
                self.close()
                raise ValueError("a model registry on PostgreSQL needs the data directory that holds the adapters")
            data_dir = Path(self.path).parent
        self.data_dir = Path(data_dir)

    # -- versions ----------------------------------------------------------------------------------
    def next_version(self) -> str:
        """The name the next tuned version gets (v1, v2, ...)."""
        with self.read() as db:
            n = db.execute("SELECT count(*) FROM model_versions").fetchone()[0]
        return f"v{int(n) + 1}"

    def record(self, version: ModelVersion) -> ModelVersion:
        """Store a new tuned version (it does not serve until activated)."""
        if version.is_base:
            raise RegistryError("'base' names the untuned model; a tuned version needs another name")
        row = {k: getattr(version, k) for k in ModelVersion.__dataclass_fields__}
        row["settings"] = json.dumps(version.settings, sort_keys=True)
        row["metrics"] = json.dumps(version.metrics, sort_keys=True)
        row["created_at"] = version.created_at or iso(utcnow())
        with self.write() as db:
            if db.execute("SELECT 1 FROM model_versions WHERE version = ?", [version.version]).fetchone():
                raise RegistryError(f"model version {version.version} exists already")
            db.table("model_versions").insert(row)
        return self.get(version.version)

    def update_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        with self.write() as db:
            db.execute("UPDATE model_versions SET metrics = ? WHERE version = ?",
                       [json.dumps(metrics, sort_keys=True), version])  # fmt: skip

    def get(self, version: str) -> ModelVersion:
        """A recorded version; RegistryError names the known ones when it does not exist."""
        with self.read() as db:
            rows = list(db.query("SELECT * FROM model_versions WHERE version = ?", [version]))
        if not rows:
            raise RegistryError(f"unknown model version {version!r} (known: {', '.join(self.names()) or 'none'})")
        return ModelVersion.from_row(rows[0])

    def names(self) -> list[str]:
        with self.read() as db:
            return [
                r[0]
                for r in db.execute(
                    "SELECT version FROM model_versions ORDER BY created_at, length(version), version"
                ).fetchall()
            ]

    def versions(self) -> list[ModelVersion]:
        """Every tuned version, oldest first."""
        with self.read() as db:
            return [
                ModelVersion.from_row(r)
                for r in db.query("SELECT * FROM model_versions ORDER BY created_at, length(version), version")
            ]

    def adapter_file(self, version: ModelVersion) -> Path:
        return self.data_dir / version.adapter_path

    # -- what serves -------------------------------------------------------------------------------
    def stack(self) -> list[str]:
        """The activation history as a stack; its last element serves ('base' when nothing was activated)."""
        with self.read() as db:
            return _replay(db)

    def active_name(self) -> str:
        return self.stack()[-1]

    def activate(self, version: str, *, actor: str, forced: bool = False, detail: str = "") -> None:
        """Make `version` serve from the next start (the caller has checked the gate or forces it)."""
        if version != BASE:
            self.get(version)
        with self.write() as db:
            previous = _replay(db)[-1]
            db.table("model_events").insert({"kind": "activated", "version": version, "previous": previous,
                                             "forced": int(forced), "actor": actor, "detail": detail,
                                             "created_at": iso(utcnow())})  # fmt: skip

    def rollback(self, *, actor: str) -> str:
        """Serve the version that served before the last activation; returns its name."""
        with self.write() as db:
            stack = _replay(db)
            if len(stack) < 2:
                raise RegistryError("nothing to roll back: the base model serves and no activation is recorded")
            db.table("model_events").insert({"kind": "rolled_back", "version": stack[-2], "previous": stack[-1],
                                             "forced": 0, "actor": actor, "detail": "",
                                             "created_at": iso(utcnow())})  # fmt: skip
        return stack[-2]

    def events(self) -> list[dict[str, Any]]:
        with self.read() as db:
            return list(db.query("SELECT * FROM model_events ORDER BY id"))


def _replay(db: Database) -> list[str]:
    """Activations push, rollbacks pop: the resulting stack's top serves."""
    stack = [BASE]
    for kind, version in db.execute("SELECT kind, version FROM model_events ORDER BY id").fetchall():
        if kind == "activated":
            stack.append(version)
        elif kind == "rolled_back" and len(stack) > 1:
            stack.pop()
    return stack


@dataclass(frozen=True)
class Serving:
    """What the serving path loads: the base alone, or the base with the active version's adapter."""

    version: str
    adapter: Path | None = None
    model_id: str | None = None  # None: the base model's own name
    problem: str = ""  # why an active version is not served (the base serves instead)

    def load_options(self) -> dict[str, Any]:
        return {"lora_path": str(self.adapter)} if self.adapter is not None else {}


def serving_choice(registry: ModelRegistry, base_path: Path, base_sha256: str | None) -> Serving:
    """The active version, checked: its adapter file unchanged (SHA-256) and made for this base model.

    A version that fails a check does not serve (the base does, and `problem` says why), so a moved or
    replaced file can never put an unknown adapter in front of customers."""
    name = registry.active_name()
    problem = _check(registry, name, base_path, base_sha256)
    if problem:
        return Serving(BASE, problem=f"model version {name} is active but not served: {problem}")
    return _serving(registry, name)


def serving_of(registry: ModelRegistry, name: str, base_path: Path, base_sha256: str | None) -> Serving:
    """A named version (e.g. for `firstline eval --model`), checked like the active one; RegistryError
    when it cannot be loaded."""
    problem = _check(registry, name, base_path, base_sha256)
    if problem:
        raise RegistryError(f"model version {name} cannot be loaded: {problem}")
    return _serving(registry, name)


def _serving(registry: ModelRegistry, name: str) -> Serving:
    if name == BASE:
        return Serving(BASE)
    version = registry.get(name)
    return Serving(name, registry.adapter_file(version), version.model_id)


def _check(registry: ModelRegistry, name: str, base_path: Path, base_sha256: str | None) -> str:
    """Why version `name` cannot serve on this base model ('' when it can)."""
    from models.loader import sha256_of

    if name == BASE:
        return ""
    version = registry.get(name)
    adapter = registry.adapter_file(version)
    known = bool(base_sha256) and str(base_sha256).lower() != "skip"
    if not adapter.is_file():
        return f"its adapter file {adapter} is missing"
    if sha256_of(adapter) != version.adapter_sha256:
        return f"its adapter file {adapter} changed after it was recorded (SHA-256 differs)"
    if known and str(base_sha256).lower() != version.base_sha256:
        return f"it was trained on another base model ({version.base_model}, SHA-256 {version.base_sha256[:12]}…)"
    if not known and Path(version.base_path) != base_path:
        return f"it was trained on {version.base_path}, but {base_path} serves"
    return ""
