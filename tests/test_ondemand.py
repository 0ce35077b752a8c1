"""OnDemandModel: load on first use, unload when idle, lifecycle events, and provisioned time in reports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import open_db, store_target

from models.errors import ModelUnavailableError
from models.fake import ScriptedChatModel
from models.ondemand import OnDemandModel
from models.types import ChatMessage
from usage.ledger import Ledger, Measurement, iso, utcnow
from usage.pricing import CloudPerInstanceHour
from usage.provisioning import ProvisioningRecorder, current_state, provisioned_seconds
from usage.reports import build_report

HELLO = [ChatMessage("user", "hello there")]


class Events:
    """Collects on_event calls."""

    def __init__(self) -> None:
        self.items: list[tuple[str, datetime, float]] = []
        self.lock = threading.Lock()

    def __call__(self, kind: str, at: datetime, seconds: float) -> None:
        with self.lock:
            self.items.append((kind, at, seconds))

    @property
    def kinds(self) -> list[str]:
        with self.lock:
            return [k for k, _, _ in self.items]


pytestmark = pytest.mark.stores


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def answer(model: OnDemandModel) -> str:
    return "".join(model.stream(HELLO))


def test_loads_on_first_use_and_unloads_after_idle_time() -> None:
    events, built = Events(), []

    def factory() -> ScriptedChatModel:
        built.append(ScriptedChatModel(default_answer="hi"))
        return built[-1]

    model = OnDemandModel(factory, idle_s=0.2, on_event=events, model_id="scripted-fake", device="CPU")
    assert not model.loaded and built == [] and model.model_id == "scripted-fake"  # hints: no load
    assert answer(model) == "hi"
    assert model.loaded and events.kinds == ["load_start", "load_end"]
    assert answer(model) == "hi" and len(built) == 1  # loaded once
    wait_for(lambda: not model.loaded)
    assert events.kinds == ["load_start", "load_end", "unload"]
    kind, unloaded_at, provisioned = events.items[-1]
    assert provisioned >= 0.2 and unloaded_at - events.items[0][1] >= timedelta(seconds=0.2)
    assert answer(model) == "hi" and len(built) == 2 and model.loads == 2  # reloads on demand
    model.close()
    assert events.kinds[-1] == "unload" and model.unloads == 2


def test_never_unloads_in_the_middle_of_an_answer() -> None:
    events = Events()
    model = OnDemandModel(lambda: ScriptedChatModel(default_answer="one two three"), idle_s=0.05, on_event=events)
    generation = model.stream(HELLO)
    assert next(generation) == "one"
    time.sleep(0.3)  # far beyond the idle time, but the answer is still being read
    assert model.loaded and model.in_use == 1 and "unload" not in events.kinds
    assert "".join(generation) == " two three"
    assert generation.usage is not None and generation.usage.completion_tokens == 3
    wait_for(lambda: not model.loaded)
    closed = model.stream(HELLO)
    closed.close()  # a generation closed early releases the model too
    wait_for(lambda: model.in_use == 0)
    model.close()


def test_a_failed_load_is_reported_and_retried() -> None:
    events, attempts = Events(), []

    def flaky() -> ScriptedChatModel:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("GPU busy")
        return ScriptedChatModel(default_answer="ok")

    model = OnDemandModel(flaky, idle_s=60, on_event=events)
    with pytest.raises(ModelUnavailableError, match="could not be loaded: GPU busy"):
        answer(model)
    assert events.kinds == ["load_start", "load_failed"] and model.in_use == 0
    assert answer(model) == "ok" and model.n_ctx == 2048 and model.count_tokens(HELLO) > 0
    model.close()
    with pytest.raises(ModelUnavailableError, match="closed"):
        answer(model)


def test_a_failing_event_callback_does_not_break_answering() -> None:
    def broken(kind: str, at: datetime, seconds: float) -> None:
        raise ValueError("accounting down")

    model = OnDemandModel(lambda: ScriptedChatModel(default_answer="fine"), idle_s=60, on_event=broken)
    assert answer(model) == "fine"
    model.close()


def test_recorded_events_give_provisioned_time_idle_time_and_instance_hour_cost(data_dir: Path) -> None:
    db = store_target(data_dir)
    ledger = Ledger(db, heartbeat=False)
    recorder = ProvisioningRecorder(db, owner=ledger.owner, model_id="scripted-fake", device="CPU")
    began = utcnow()
    model = OnDemandModel(lambda: ScriptedChatModel(), idle_s=0.3, on_event=recorder)
    generation = model.stream(HELLO)
    rid = ledger.start(conversation_id="c", route="model")
    "".join(generation)
    ledger.finish(rid, measurement=Measurement(prefill_s=0.01, decode_s=0.02))
    assert current_state(open_db(db)) is not None  # loaded right now
    wait_for(lambda: not model.loaded)
    model.close()
    rows = list(open_db(db).query('SELECT kind, start, "end", seconds FROM provisioning ORDER BY id'))
    assert [r["kind"] for r in rows] == ["provisioned", "load"]
    provisioned = rows[0]
    assert provisioned["end"] is not None and provisioned["seconds"] >= 0.3
    assert current_state(open_db(db)) is None
    later = utcnow() + timedelta(seconds=1)
    measured = provisioned_seconds(open_db(db), began - timedelta(seconds=1), later, later)
    assert measured.source == "provisioning" and measured.seconds == pytest.approx(
        Decimal(str(provisioned["seconds"])), abs=Decimal("0.000002")
    )
    hourly = CloudPerInstanceHour(price_per_hour=Decimal("3600"))  # 1 per provisioned second: easy to check
    report = build_report(db, hourly, by="route", since=began - timedelta(seconds=1), until=later, now=later)
    assert report.totals.cost == pytest.approx(measured.seconds, abs=Decimal("0.00001"))
    data = report.to_json()["totals"]
    assert data["utilization"] == pytest.approx(0.03 / float(measured.seconds), rel=0.01)
    assert data["idle_s"] == pytest.approx(float(measured.seconds) - 0.03, abs=1e-5)
    recorder.close()
    ledger.close()


def test_periods_left_open_by_a_dead_process_end_at_its_last_heartbeat(data_dir: Path) -> None:
    from usage.db import Store
    from usage.provisioning import migrations

    db = store_target(data_dir)
    ledger = Ledger(db, heartbeat=False)
    Store(db, migrations).close()
    start = utcnow() - timedelta(hours=3)
    open_db(db).table("instances").insert(
        {"owner": "dead", "host": "elsewhere", "pid": 1, "started_at": iso(start),
         "heartbeat_at": iso(start + timedelta(hours=1)), "stopped_at": None}
    )  # fmt: skip
    open_db(db).table("provisioning").insert({"owner": "dead", "kind": "provisioned", "start": iso(start)})
    now = utcnow()
    measured = provisioned_seconds(open_db(db), start - timedelta(hours=1), now, now)
    assert measured.seconds == Decimal(3600)  # not three hours: the process stopped beating after one
    recorder = ProvisioningRecorder(db, owner=ledger.owner)
    assert recorder.recover() == 0  # already closed by the constructor
    row = next(iter(open_db(db).query("SELECT \"end\", seconds FROM provisioning WHERE owner = 'dead'")))
    assert row["end"] == iso(start + timedelta(hours=1)) and row["seconds"] == 3600
    recorder.close()
    ledger.close()


def test_without_provisioning_records_process_lifetimes_stand_in(data_dir: Path) -> None:
    db = store_target(data_dir)
    ledger = Ledger(db, heartbeat=False)
    ledger.close()
    now = utcnow()
    measured = provisioned_seconds(open_db(db), now - timedelta(hours=1), now, now)
    assert measured.source == "instances" and measured.seconds >= 0
