"""Key rotation, rewrap, status and retirement; crypto-shredding on revoke; the keys CLI."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, event, select, update
from typer.testing import CliRunner

from credman import (
    AccessDenied,
    BasicAuth,
    CredentialManager,
    CredentialValidationError,
    DecryptionError,
    KeyringError,
    _sealing,
    keys,
)
from credman.cli.context import Options
from credman.cli.keys import keys_app
from credman.crypto import (
    EnvKeyProvider,
    KeyFileProvider,
    Keyring,
    KmsKeyProvider,
    WrappedKey,
    encode_keyring,
    generate_keyring,
    open_field,
    unwrap,
)
from credman.storage import engine as storage
from credman.storage import migrate
from credman.storage.repository import CREDENTIALS

WORKER = Path(__file__).with_name("rotation_worker.py")


def _basic(password: str) -> BasicAuth:
    return BasicAuth(username="u", password=password)


def _store_many(manager: CredentialManager, count: int) -> dict[str, str]:
    stored = {f"c{index:03d}": f"pw-{index}" for index in range(count)}
    for credential_id, password in stored.items():
        manager.store(credential_id, _basic(password), principal="admin")
    return stored


def _password(manager: CredentialManager, credential_id: str) -> str:
    credential = manager.get(credential_id, principal="admin")
    return str(credential.password.reveal())  # type: ignore[attr-defined]


def _row(engine: Engine, credential_id: str) -> Any:
    with storage.read(engine) as connection:
        return connection.execute(
            select(CREDENTIALS).where(CREDENTIALS.c.id == credential_id)
        ).one()


def _key_versions(engine: Engine) -> dict[str, int | None]:
    """Each row's key version, read with plain SQL (independent of credman.keys)."""
    query = select(CREDENTIALS.c.id, CREDENTIALS.c.key_version)
    with storage.read(engine) as connection:
        return dict(connection.execute(query).all())


def _set_column(engine: Engine, credential_id: str, **values: Any) -> None:
    with storage.write(engine) as connection:
        connection.execute(
            update(CREDENTIALS).where(CREDENTIALS.c.id == credential_id).values(**values)
        )


def _key_file_versions(key_file: Path) -> list[str]:
    return list(json.loads(key_file.read_text())["keys"])


# -- rotation and rewrap -----------------------------------------------------------------


def test_rotation_moves_every_data_key_to_the_new_primary(manager: CredentialManager) -> None:
    """rotate_keys adds version 2 and re-wraps all seven credentials in batches of three."""
    stored = _store_many(manager, 7)
    report = manager.rotate_keys(principal="admin", batch_size=3)
    assert keys.RotationReport(1, 2, keys.RewrapReport(2, 7, 3, 0)) == report
    assert dict.fromkeys(stored, 2) == _key_versions(manager.engine)
    assert stored == {credential_id: _password(manager, credential_id) for credential_id in stored}


def test_rewrap_touches_only_the_wrapped_key(manager: CredentialManager) -> None:
    """A rewrap keeps the credential version, history and sealed fields; only the DEK wrap moves."""
    manager.store("c", _basic("pw"), principal="admin")
    before, history = _row(manager.engine, "c"), manager.history("c", principal="admin")
    manager.rotate_keys(principal="admin")
    after = _row(manager.engine, "c")
    assert (before.version, before.sealed, history) == (
        after.version,
        after.sealed,
        manager.history("c", principal="admin"),
    )
    assert (1, 2) == (before.key_version, after.key_version)
    assert before.wrapped_dek != after.wrapped_dek


def test_new_credentials_are_wrapped_under_the_new_primary(manager: CredentialManager) -> None:
    """After a rotation, a stored credential uses the new primary version."""
    manager.rotate_keys(principal="admin")
    assert 2 == manager.store("new", _basic("pw"), principal="admin").key_version


def test_progress_is_reported_before_and_after_each_batch(manager: CredentialManager) -> None:
    """The progress hook sees 0 of 5, then every committed batch of two."""
    _store_many(manager, 5)
    events: list[keys.RewrapProgress] = []
    manager.rotate_keys(principal="admin", batch_size=2, progress=events.append)
    assert [(0, 5), (2, 5), (4, 5), (5, 5)] == [(e.done, e.total) for e in events]


class _Interrupted(Exception):
    """Stands for a rotation that stopped half-way."""


def _stop_after(batches: int) -> Callable[[keys.RewrapProgress], None]:
    seen: list[keys.RewrapProgress] = []

    def progress(event: keys.RewrapProgress) -> None:
        seen.append(event)
        if len(seen) > batches:
            raise _Interrupted

    return progress


def test_rewrap_finishes_an_interrupted_rotation(manager: CredentialManager) -> None:
    """A rotation stopped after one batch leaves 3 pending; rewrap moves exactly those."""
    stored = _store_many(manager, 5)
    with pytest.raises(_Interrupted):
        manager.rotate_keys(principal="admin", batch_size=2, progress=_stop_after(1))
    assert 3 == manager.key_status(principal="admin").pending
    assert keys.RewrapReport(2, 3, 2, 0) == manager.rewrap_keys(principal="admin", batch_size=2)
    assert dict.fromkeys(stored, 2) == _key_versions(manager.engine)


def test_rewrap_with_nothing_to_do_writes_nothing(manager: CredentialManager) -> None:
    """Rewrap on a database already on the primary reports zero batches."""
    _store_many(manager, 2)
    assert keys.RewrapReport(1, 0, 0, 0) == manager.rewrap_keys(principal="admin")


def test_a_data_key_that_does_not_open_is_skipped_and_reported(
    manager: CredentialManager,
) -> None:
    """A damaged wrapped key stays on its version, is named, and the others move on."""
    _store_many(manager, 3)
    _set_column(manager.engine, "c001", wrapped_dek=b"\x01" + bytes(60))
    report = manager.rotate_keys(principal="admin").rewrap
    assert (2, 1, ("c001",)) == (report.rewrapped, report.remaining, report.unreadable)
    assert {"c000": 2, "c001": 1, "c002": 2} == _key_versions(manager.engine)


def test_rewrap_of_a_row_changed_meanwhile_leaves_the_new_material(
    manager: CredentialManager,
) -> None:
    """The compare-and-set refuses a rewrap of a row whose data key was replaced since it was read."""
    manager.store("c", _basic("old"), principal="admin")
    stale = _row(manager.engine, "c")
    ring = manager.keys.provider.update(lambda current: current.with_new_version())
    manager.store("c", _basic("new"), principal="admin")
    with storage.write(manager.engine) as connection:
        assert (0, ()) == keys.rewrap_rows(connection, ring, [stale], manager.keys.seals)
    assert "new" == _password(manager, "c")


@pytest.mark.parametrize("batch_size", [0, keys.MAX_BATCH_SIZE + 1, True, 2.5])
def test_batch_size_is_validated(manager: CredentialManager, batch_size: Any) -> None:
    """A batch size outside 1..MAX_BATCH_SIZE is refused before any key is added."""
    with pytest.raises(CredentialValidationError, match="batch_size"):
        manager.rotate_keys(principal="admin", batch_size=batch_size)
    assert 1 == manager.reload_keys().primary


def test_rotation_needs_a_writable_key_provider(database_url: str) -> None:
    """Keys from an environment variable cannot be rotated; the error says so."""
    variable = base64.b64encode(encode_keyring(generate_keyring())).decode()
    provider = EnvKeyProvider(environ={"CREDMAN_KEY": variable})
    with (
        CredentialManager(database_url, key_provider=provider) as manager,
        pytest.raises(KeyringError, match="read-only"),
    ):
        manager.rotate_keys(principal="admin")


# -- status and retire -------------------------------------------------------------------


def test_status_counts_credentials_per_version(manager: CredentialManager) -> None:
    """Two rows on 1, one on the new primary 2, one revoked with no key at all."""
    _store_many(manager, 3)
    manager.keys.add_version(principal="admin")
    manager.store("late", _basic("pw"), principal="admin")
    manager.revoke("c002", principal="admin", reason="gone")
    status = manager.key_status(principal="admin")
    assert (
        keys.KeyStatus(
            primary=2,
            versions=(
                keys.KeyVersionStatus(1, False, True, 2),
                keys.KeyVersionStatus(2, True, True, 1),
            ),
            shredded=1,
        )
        == status
    )
    assert (2, ()) == (status.pending, status.missing)


def test_status_names_a_version_missing_from_the_ring(manager: CredentialManager) -> None:
    """A row under a version the ring lacks shows up as missing."""
    manager.store("c", _basic("pw"), principal="admin")
    _set_column(manager.engine, "c", key_version=9)
    assert (9,) == manager.key_status(principal="admin").missing


def test_retire_is_refused_while_a_credential_uses_the_version(
    manager: CredentialManager, key_file: Path
) -> None:
    """Retiring version 1 before the rewrap fails, naming how many rows still use it."""
    _store_many(manager, 2)
    manager.keys.add_version(principal="admin")
    with pytest.raises(KeyringError, match="key version 1 still protects 2 credential"):
        manager.retire_key(1, principal="admin")
    assert ["1", "2"] == _key_file_versions(key_file)


def test_retire_removes_the_version_from_the_key_file(
    make_manager: Callable[..., CredentialManager], key_file: Path
) -> None:
    """Once nothing uses version 1, retire drops it from the file and every row still opens."""
    manager = make_manager()
    stored = _store_many(manager, 3)
    manager.rotate_keys(principal="admin")
    assert (2,) == manager.retire_key(1, principal="admin")
    assert ["2"] == _key_file_versions(key_file)
    fresh = make_manager()
    assert stored == {credential_id: _password(fresh, credential_id) for credential_id in stored}


@pytest.mark.parametrize(
    ("version", "message"), [(2, "primary"), (7, "key version 7 is not in the keyring")]
)
def test_retire_refuses_the_primary_and_unknown_versions(
    manager: CredentialManager, version: int, message: str
) -> None:
    """The primary cannot be retired, and an unknown version is named."""
    manager.keys.add_version(principal="admin")
    with pytest.raises(KeyringError, match=message):
        manager.retire_key(version, principal="admin")


def test_key_operations_need_an_admin(manager: CredentialManager, key_file: Path) -> None:
    """A principal with manage on every credential still may not rotate, inspect or retire keys."""
    manager.grant("ops", "*", {"manage"}, principal="admin")
    manager.store("c", _basic("pw"), principal="admin")
    operations: list[Callable[[], object]] = [
        lambda: manager.rotate_keys(principal="ops"),
        lambda: manager.rewrap_keys(principal="ops"),
        lambda: manager.key_status(principal="ops"),
        lambda: manager.retire_key(1, principal="ops"),
    ]
    for operation in operations:
        with pytest.raises(AccessDenied):
            operation()
    assert ["1"] == _key_file_versions(key_file)
    denied = manager.audit_events(principal="admin", outcome="denied")
    assert ["key_rotate", "key_rewrap", "key_status", "key_retire"] == [e.action for e in denied]


# -- audit -----------------------------------------------------------------------------


def test_key_changes_are_audited_without_key_material(manager: CredentialManager) -> None:
    """Rotate, each rewrap batch and retire leave audit rows holding only numbers."""
    _store_many(manager, 3)
    manager.rotate_keys(principal="admin", batch_size=2)
    manager.retire_key(1, principal="admin")
    events = [e for e in manager.audit_events(principal="admin") if e.action.startswith("key_")]
    assert [
        ("key_rotate", {"primary": 2}),
        ("key_rewrap", {"primary": 2, "rewrapped": 2, "unreadable": 0}),
        ("key_rewrap", {"primary": 2, "rewrapped": 1, "unreadable": 0}),
        ("key_retire", {"version": 1}),
    ] == [(e.action, dict(e.detail)) for e in events]


def test_audit_chain_verifies_after_rotate_and_retire(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """The audit key survives rotation: the chain verifies, also for a manager loaded afterwards."""
    manager = make_manager()
    _store_many(manager, 2)
    manager.rotate_keys(principal="admin")
    manager.retire_key(1, principal="admin")
    manager.store("after", _basic("pw"), principal="admin")
    assert (True, True) == (manager.verify_audit().ok, make_manager().verify_audit().ok)


# -- other processes -------------------------------------------------------------------


ROTATE_AND_RETIRE = (
    "import sys\n"
    "from credman import CredentialManager, keys\n"
    "manager = CredentialManager(sys.argv[1], sys.argv[2])\n"
    "manager.rotate_keys(principal='admin')\n"
    "manager.retire_key(1, principal='admin')\n"
)


def test_another_process_rotation_is_seen(
    manager: CredentialManager, database_url: str, key_file: Path
) -> None:
    """After another process rotates and retires version 1, this manager reads and writes on 2."""
    manager.store("c", _basic("pw"), principal="admin")
    subprocess.run(
        [sys.executable, "-c", ROTATE_AND_RETIRE, database_url, str(key_file)],
        check=True,
        timeout=60,
    )
    assert "pw" == _password(manager, "c")
    assert 2 == manager.store("new", _basic("pw"), principal="admin").key_version


def test_keyring_for_write_gives_a_stale_manager_the_new_primary(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """Inside a write transaction, keyring_for_write reloads what another manager rotated to."""
    stale, other = make_manager(), make_manager()
    other.rotate_keys(principal="admin")
    with storage.write(stale.engine) as connection:
        assert 2 == stale.keys.for_write(connection).primary


def test_a_stale_manager_never_writes_under_a_retired_version(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """A manager that loaded its ring before another one rotated and retired still stores readably."""
    stale, other = make_manager(), make_manager()
    other.rotate_keys(principal="admin")
    other.retire_key(1, principal="admin")
    stale.store("c", _basic("pw"), principal="admin")
    assert "pw" == _password(other, "c")


def _run_worker(database_url: str, key_file: Path, command: str, kill: str) -> int:
    arguments = [str(WORKER), database_url, str(key_file), command, str(BATCH), kill]
    return subprocess.run([sys.executable, *arguments], timeout=120, check=False).returncode


BATCH = 4


def _kill_point(rng: random.Random, pending: int) -> str:
    """Somewhere that leaves work behind: between batches, or inside one before its commit."""
    batches = math.ceil(pending / BATCH)
    return rng.choice(
        [
            f"batch:{rng.randrange(batches)}",
            f"row:{rng.randrange(1, pending + 1)}",
            f"commit:{rng.randrange(1, batches + 1)}",
        ]
    )


@pytest.mark.slow
def test_rotation_killed_repeatedly_loses_nothing_and_completes(
    manager: CredentialManager, database_url: str, key_file: Path
) -> None:
    """SIGKILLed five times at random points, every credential still opens; a rerun finishes."""
    stored = _store_many(manager, 30)
    rng = random.Random(20240603)
    commands = ["rotate", "rewrap", "rewrap", "rewrap", "rewrap"]
    for command in commands:
        pending = 30 if command == "rotate" else manager.key_status(principal="admin").pending
        assert -9 == _run_worker(database_url, key_file, command, _kill_point(rng, pending))
        assert stored == {cid: _password(manager, cid) for cid in stored}
        assert {1} == {info.version for info in manager.list(principal="admin")}
    assert 0 == _run_worker(database_url, key_file, "rewrap", "none")
    status = manager.key_status(principal="admin")
    assert (2, 0, ["1", "2"]) == (status.primary, status.pending, _key_file_versions(key_file))
    assert stored == {cid: _password(manager, cid) for cid in stored}


# -- crypto-shredding ------------------------------------------------------------------


def _sqlite_default_keeps_freed_bytes(dbapi_connection: Any, _record: Any) -> None:
    """Runs before credman's own setup, as on SQLite builds whose secure_delete default is off."""
    dbapi_connection.execute("PRAGMA secure_delete=OFF")


def test_revoke_leaves_no_ciphertext_in_the_sqlite_file_or_wal(
    sqlite_url: str, key_file: Path
) -> None:
    """After revoke and a checkpoint the ciphertexts are gone, even where SQLite keeps freed bytes."""
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        event.listen(manager.engine, "connect", _sqlite_default_keeps_freed_bytes, insert=True)
        manager.engine.dispose()
        _store_many(manager, 20)
        row = _row(manager.engine, "c004")
        manager.revoke("c004", principal="admin", reason="shred")
        assert storage.checkpoint(manager.engine)
        on_disk = database.read_bytes() + database.with_name(f"{database.name}-wal").read_bytes()
    needles = [row.wrapped_dek, row.sealed["password"].encode()]
    assert [False, False] == [needle in on_disk for needle in needles]


def _opens_field(data_key: bytes, backup: Any) -> bool:
    blob = base64.b64decode(backup.sealed["password"])
    bound = _sealing.binding(backup.type, backup.public)
    try:
        open_field(data_key, blob, credential_id=backup.id, field="password", bound=bound)
    except DecryptionError:
        return False
    return True


def _opens(key: bytes, backup: Any) -> bool:
    """Whether ``key`` opens the backed-up password, used as the KEK or as the data key."""
    candidates = [key]
    ring = Keyring({backup.key_version: key}, bytes(32))
    wrapped = WrappedKey(backup.key_version, backup.wrapped_dek)
    with contextlib.suppress(DecryptionError):
        candidates.append(unwrap(ring, wrapped, credential_id=backup.id))
    return any(_opens_field(candidate, backup) for candidate in candidates)


def test_a_backup_from_before_revoke_opens_until_its_key_is_retired(
    manager: CredentialManager,
) -> None:
    """Revoke alone does not reach old backups: the key that wrapped the data key still opens them."""
    manager.store("c", _basic("pw"), principal="admin")
    backup = _row(manager.engine, "c")
    manager.revoke("c", principal="admin", reason="offboarded")
    assert _opens(manager.reload_keys().kek(1), backup)


def test_after_revoke_rotate_and_retire_no_key_opens_the_old_ciphertext(
    manager: CredentialManager,
) -> None:
    """Once version 1 is retired, no key left in the ring opens a pre-revoke backup of the row."""
    manager.store("c", _basic("pw"), principal="admin")
    manager.store("other", _basic("pw2"), principal="admin")
    backup = _row(manager.engine, "c")
    manager.revoke("c", principal="admin", reason="offboarded")
    manager.rotate_keys(principal="admin")
    manager.retire_key(1, principal="admin")
    ring = manager.reload_keys()
    assert [False] == [_opens(ring.kek(version), backup) for version in ring.versions]
    live = _row(manager.engine, "c")
    assert ({}, None, None) == (live.sealed, live.wrapped_dek, live.key_version)


# -- providers -------------------------------------------------------------------------


def test_key_file_is_decoded_again_only_when_it_changes(key_file: Path) -> None:
    """Loading an unchanged key file returns the same ring; an update gives a new one."""
    provider = KeyFileProvider(key_file)
    first = provider.load()
    assert first is provider.load()
    KeyFileProvider(key_file).update(lambda ring: ring.with_new_version())
    assert (1, 2) == provider.load().versions


def test_kms_is_asked_again_only_when_the_blob_changes() -> None:
    """Reloading an unchanged KMS-wrapped ring makes no further decrypt call."""
    store = {"blob": encode_keyring(generate_keyring())}
    decrypts: list[bytes] = []
    provider = KmsKeyProvider(
        encrypt=lambda data: data,
        decrypt=lambda data: decrypts.append(data) or data,
        read=lambda: store["blob"],
        write=lambda data: store.__setitem__("blob", data),
    )
    provider.load()
    provider.load()
    provider.update(lambda ring: ring.with_new_version())
    provider.load()
    assert 2 == len(decrypts)


# -- property --------------------------------------------------------------------------


IDS = ["a", "b", "c", "d"]


class _KeyringModel(RuleBasedStateMachine):
    """Random interleavings of store, get, revoke, add version, rotate, rewrap and retire."""

    template: Path  # an empty database at the current schema, copied for each example

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        path = Path(self.directory.name)
        shutil.copyfile(self.template, path / "c.db")
        KeyFileProvider(path / "k.key").create()
        self.manager = CredentialManager(
            f"sqlite:///{path / 'c.db'}", str(path / "k.key"), synchronous="NORMAL"
        )
        self.stored: dict[str, str] = {}
        self.revoked: set[str] = set()
        self.writes = 0

    def teardown(self) -> None:
        self.manager.close()
        self.directory.cleanup()

    def _versions(self) -> dict[str, int | None]:
        return _key_versions(self.manager.engine)

    def _all_on_primary(self) -> bool:
        primary = self.manager.reload_keys().primary
        return all(v in (None, primary) for v in self._versions().values())

    @initialize(credential_ids=st.sets(st.sampled_from(IDS), max_size=3))
    def seed(self, credential_ids: set[str]) -> None:
        for credential_id in sorted(credential_ids):
            self.store(credential_id)

    @rule(credential_id=st.sampled_from(IDS))
    def store(self, credential_id: str) -> None:
        if credential_id in self.revoked:
            return
        self.writes += 1
        self.manager.store(credential_id, _basic(f"v{self.writes}"), principal="admin")
        self.stored[credential_id] = f"v{self.writes}"

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        credential_id = data.draw(st.sampled_from(sorted(self.stored)))
        assert self.stored[credential_id] == _password(self.manager, credential_id)

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        credential_id = data.draw(st.sampled_from(sorted(self.stored)))
        self.manager.revoke(credential_id, principal="admin", reason="model")
        del self.stored[credential_id]
        self.revoked.add(credential_id)

    @rule()
    def add_version(self) -> None:
        self.manager.keys.add_version(principal="admin")

    @rule(batch_size=st.integers(1, 3))
    def rotate(self, batch_size: int) -> None:
        self.manager.rotate_keys(principal="admin", batch_size=batch_size)
        assert self._all_on_primary()

    @rule(batch_size=st.integers(1, 3), stop_after=st.none() | st.integers(0, 2))
    def rewrap(self, batch_size: int, stop_after: int | None) -> None:
        if stop_after is None:
            self.manager.rewrap_keys(principal="admin", batch_size=batch_size)
            assert self._all_on_primary()
            return
        progress = _stop_after(stop_after)
        with contextlib.suppress(_Interrupted):
            self.manager.rewrap_keys(principal="admin", batch_size=batch_size, progress=progress)

    @rule(data=st.data())
    def retire(self, data: st.DataObject) -> None:
        ring = self.manager.reload_keys()
        version = data.draw(st.sampled_from([*ring.versions, ring.primary + 1]))
        unused = version not in self._versions().values()
        if version in ring.keys and version != ring.primary and unused:
            assert version not in self.manager.retire_key(version, principal="admin")
            return
        with pytest.raises(KeyringError):
            self.manager.retire_key(version, principal="admin")
        assert ring.versions == self.manager.reload_keys().versions

    @invariant()
    def every_row_has_its_key_in_the_ring(self) -> None:
        ring = self.manager.reload_keys()
        assert {v for v in self._versions().values() if v is not None} <= set(ring.keys)


def test_random_interleavings_keep_every_credential_readable(
    sqlite_url: str, key_file: Path
) -> None:
    """Gets return the last stored value, full rewraps reach the primary, retire is exact."""
    engine = storage.make_engine(sqlite_url)  # the schema only: no key fingerprints yet
    migrate.upgrade(engine)
    engine.dispose()
    _KeyringModel.template = Path(sqlite_url.removeprefix("sqlite:///"))
    run_state_machine_as_test(
        _KeyringModel,
        settings=settings(max_examples=30, stateful_step_count=15, deadline=None),
    )


# -- command line ----------------------------------------------------------------------


def _cli(database_url: str, key_file: Path) -> Callable[..., Any]:
    """Invoke `credman keys ...` in-process, wired as the main app wires it."""
    app = typer.Typer()

    @app.callback()
    def options(ctx: typer.Context, principal: str = "admin") -> None:
        ctx.obj = Options(database_url=database_url, key_file=str(key_file), acting_as=principal)

    app.add_typer(keys_app, name="keys")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_rotate_then_retire(
    manager: CredentialManager, database_url: str, key_file: Path
) -> None:
    """`keys rotate --batch-size 2` re-wraps everything; `keys retire 1` then succeeds."""
    _store_many(manager, 3)
    cli = _cli(database_url, key_file)
    rotated = cli("keys", "rotate", "--batch-size", "2")
    assert (0, True) == (
        rotated.exit_code,
        "re-wrapped 3 data keys under version 2 in 2 batches" in rotated.stdout,
    )
    retired = cli("keys", "retire", "1", "--yes")
    assert (0, True) == (retired.exit_code, "retired key version 1" in retired.stdout)


def test_cli_status_shows_counts_and_what_may_be_retired(
    manager: CredentialManager, database_url: str, key_file: Path
) -> None:
    """`keys status` lists each version with its count and marks unused old versions."""
    _store_many(manager, 3)
    manager.rotate_keys(principal="admin")
    result = _cli(database_url, key_file)("keys", "status")
    lines = [line.split("│")[1:-1] for line in result.stdout.splitlines() if line.startswith("│")]
    assert [["1", "", "0", "unused: may be retired"], ["2", "yes", "3", ""]] == [
        [cell.strip() for cell in line] for line in lines
    ]


def test_cli_retire_in_use_fails_with_the_reason(
    manager: CredentialManager, database_url: str, key_file: Path
) -> None:
    """`keys retire` of a version still in use fails with a KeyringError saying why."""
    manager.store("c", _basic("pw"), principal="admin")
    manager.keys.add_version(principal="admin")
    result = _cli(database_url, key_file)("keys", "retire", "1", "--yes")
    assert 1 == result.exit_code
    assert "key version 1 still protects 1 credential(s): run 'credman keys rewrap' first" == str(
        result.exception
    )


def test_cli_rewrap_exits_nonzero_while_rows_stay_behind(
    manager: CredentialManager, database_url: str, key_file: Path
) -> None:
    """`keys rewrap` exits 1 and says so when a data key could not be moved."""
    _store_many(manager, 2)
    manager.keys.add_version(principal="admin")
    _set_column(manager.engine, "c000", wrapped_dek=b"\x01" + bytes(60))
    result = _cli(database_url, key_file)("keys", "rewrap")
    assert (1, True) == (
        result.exit_code,
        "did not open and keep their old version: c000" in result.stderr,
    )
