"""Login hardening (issue 17, finding 6): lockout per user name and address with a growing delay that
survives a restart, a per-process rate when the address is unknown, every failure audited (never a
password), unknown users answered as slowly as real ones, the password policy, the first-start
password in an owner-only file, and the lockout seen through Gradio's real /login route."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gradio as gr
import httpx
import pytest
from starlette.middleware import Middleware

import app.__main__ as console_main
from app.services.auth import (
    ACTOR_CHARS,
    ADDRESS_MAX_FAILURES,
    LOCK_BASE_S,
    MAX_FAILURES,
    MAX_LOCK_S,
    ClientAddressMiddleware,
    ProcessRate,
    lock_seconds,
    login,
)
from app.ui.interface import make_auth
from db.audit import audit_entries
from db.store import open_store
from db.users import UserError, create_user, login_attempt, password_problem
from tests.app.conftest import PASSWORDS

RITA = ("rita", "review-pass-1")  # the `store` fixture's reviewer
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


class FakeClock:
    """The clock login() reads: moved by hand, so no test sleeps through a lock."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _fail(store, clock, times: int, user: str = "rita", address: str | None = None):
    results = [login(store, user, f"wrong-guess-{i}", address, clock=clock) for i in range(times)]
    assert not any(r.ok for r in results)
    return results[-1]


def test_lock_delays_grow_and_are_capped():
    assert [lock_seconds(n) for n in range(MAX_FAILURES)] == [0.0] * MAX_FAILURES
    assert [lock_seconds(MAX_FAILURES + k) for k in range(4)] == [LOCK_BASE_S * 2**k for k in range(4)]
    assert lock_seconds(MAX_FAILURES + 50) == lock_seconds(10**6) == MAX_LOCK_S == 900


def test_five_failures_lock_even_the_right_password_until_the_delay_passes(store, clock):
    four = _fail(store, clock, MAX_FAILURES - 1)
    assert four.outcome == "wrong" and four.failures == 4 and four.retry_after_s == 0
    fifth = _fail(store, clock, 1)
    assert fifth.failures == MAX_FAILURES and fifth.retry_after_s == LOCK_BASE_S

    locked = login(store, *RITA, clock=clock)
    assert not locked.ok and locked.outcome == "locked" and locked.retry_after_s == LOCK_BASE_S
    clock.advance(LOCK_BASE_S - 1)
    assert login(store, *RITA, clock=clock).outcome == "locked"
    with store.session() as s:  # refusals while locked are not counted as further failures
        assert login_attempt(s, "user", "rita").failures == MAX_FAILURES

    clock.advance(2)
    ok = login(store, *RITA, clock=clock)
    assert ok.ok and ok.role == "reviewer"
    with store.session() as s:
        assert login_attempt(s, "user", "rita") is None  # the success reset the counter


def test_each_further_failure_doubles_the_lock(store, clock):
    _fail(store, clock, MAX_FAILURES)
    clock.advance(LOCK_BASE_S)
    sixth = _fail(store, clock, 1)
    assert sixth.failures == 6 and sixth.retry_after_s == 2 * LOCK_BASE_S
    clock.advance(LOCK_BASE_S)
    assert login(store, *RITA, clock=clock).outcome == "locked"  # 60 s this time
    clock.advance(LOCK_BASE_S)
    assert login(store, *RITA, clock=clock).ok


def test_a_success_resets_the_count(store, clock):
    _fail(store, clock, MAX_FAILURES - 1)
    assert login(store, *RITA, clock=clock).ok
    assert _fail(store, clock, MAX_FAILURES - 1).retry_after_s == 0  # counting starts again
    assert login(store, *RITA, clock=clock).ok
    with store.session() as s:
        assert login_attempt(s, "user", "rita") is None


def test_the_lock_survives_a_restart(store, clock):
    _fail(store, clock, MAX_FAILURES)
    reopened = open_store(store.url)  # a new process would open the same file
    assert login(reopened, *RITA, clock=clock).outcome == "locked"
    clock.advance(LOCK_BASE_S + 1)
    assert login(reopened, *RITA, clock=clock).ok


def test_one_locked_user_does_not_lock_another(store, clock):
    _fail(store, clock, MAX_FAILURES + 3)
    assert login(store, "otto", PASSWORDS["otto"], clock=clock).ok


def test_unknown_users_are_counted_and_locked_like_real_ones(store, clock):
    ghost = _fail(store, clock, MAX_FAILURES, user="nobody")
    real = _fail(store, clock, MAX_FAILURES, user="ann")
    assert (ghost.outcome, ghost.failures, ghost.retry_after_s) == (
        real.outcome, real.failures, real.retry_after_s
    )
    assert login(store, "nobody", "anything-at-all", clock=clock).outcome == "locked"


def test_failures_are_audited_without_passwords(store, clock):
    _fail(store, clock, MAX_FAILURES, address="198.51.100.7")
    login(store, *RITA, "198.51.100.7", clock=clock)  # locked
    clock.advance(LOCK_BASE_S)
    login(store, *RITA, "198.51.100.7", clock=clock)  # ok
    with store.session() as s:
        failed = audit_entries(s, action="login_failed")
        locked = audit_entries(s, action="login_locked")
        ok = audit_entries(s, action="login")
        everything = [(e.actor, e.entity_id, e.before_json, e.after_json) for e in audit_entries(s)]
    assert [e.actor for e in failed] == ["rita"] * MAX_FAILURES
    assert [json.loads(e.after_json)["failures"] for e in failed] == [1, 2, 3, 4, 5]
    assert json.loads(failed[-1].after_json)["address"] == "198.51.100.7"
    assert json.loads(failed[-1].after_json)["locked_for_s"] == LOCK_BASE_S
    assert [(e.actor, json.loads(e.after_json)["locked"]) for e in locked] == [("rita", "user")]
    assert [e.actor for e in ok] == ["rita"]
    text = json.dumps(everything)
    assert "wrong-guess" not in text and RITA[1] not in text  # no password, right or wrong, is logged


def test_the_audited_name_is_cut_and_printable(store, clock):
    long_name = "x" * 5000
    assert login(store, long_name, "wrong-guess", clock=clock).username == "x" * ACTOR_CHARS
    login(store, "evil\nname\x1b[31m", "wrong-guess", clock=clock)
    login(store, "   ", "wrong-guess", clock=clock)
    with store.session() as s:
        actors = [e.actor for e in audit_entries(s, action="login_failed")]
    assert actors == ["x" * ACTOR_CHARS, "evil?name?[31m", "anonymous"]


def test_an_address_is_locked_after_failures_across_names(store, clock):
    address = "203.0.113.9"
    for i in range(ADDRESS_MAX_FAILURES):  # one guess per name: no user name gets near its own limit
        login(store, f"user{i}", "wrong-guess", address, clock=clock)
    refused = login(store, *RITA, address, clock=clock)
    assert refused.outcome == "locked" and refused.retry_after_s == LOCK_BASE_S
    assert login(store, *RITA, "192.0.2.1", clock=clock).ok  # another address is not affected
    with store.session() as s:
        assert json.loads(audit_entries(s, action="login_locked")[-1].after_json)["locked"] == "address"
    clock.advance(LOCK_BASE_S)
    assert login(store, *RITA, address, clock=clock).ok
    with store.session() as s:  # a success does not reset the address (an attacker's own account would)
        assert login_attempt(s, "address", address).failures == ADDRESS_MAX_FAILURES


def test_without_an_address_failures_are_rate_limited_per_process(store, clock):
    rate = ProcessRate(max_failures=3, window_s=60)
    for i in range(3):
        assert login(store, f"spray{i}", "wrong-guess", clock=clock, rate=rate).outcome == "wrong"
    throttled = login(store, *RITA, clock=clock, rate=rate)
    assert throttled.outcome == "throttled" and 0 < throttled.retry_after_s <= 60
    clock.advance(61)
    assert login(store, *RITA, clock=clock, rate=rate).ok
    with store.session() as s:
        assert json.loads(audit_entries(s, action="login_locked")[-1].after_json)["locked"] == "process"


def test_an_unknown_user_costs_as_much_as_a_wrong_password(store, clock):
    def timed(user: str) -> float:
        clock.advance(MAX_LOCK_S + 1)  # never locked: both paths check a password every time
        start = time.perf_counter()
        result = login(store, user, "wrong-guess", clock=clock)
        elapsed = time.perf_counter() - start
        assert result.outcome == "wrong"
        return elapsed

    timed("rita"), timed("nobody-here")  # warm up: the dummy hash is made once
    known, unknown = [], []
    for _ in range(10):  # interleaved, so a noisy neighbour slows both alike
        known.append(timed("rita"))
        unknown.append(timed("nobody-here"))
    ratio = statistics.median(known) / statistics.median(unknown)
    assert 1 / 3 < ratio < 3, (statistics.median(known), statistics.median(unknown))


@pytest.mark.parametrize(
    "username, password, why",
    [
        ("rex", "password", "at least 10"),
        ("rex", "short-1", "at least 10"),
        ("rex", "password123", "common"),
        ("rex", "admin12345", "common"),
        ("rex", "qwertyuiop", "common"),
        ("rex", "QwertyUIOP", "common"),
        ("rex", "Password2024!", "common"),  # a common word with a suffix
        ("rex", "letmein-2024", "common"),
        ("reviewer-rex", "reviewer-rex", "user name"),
        ("reviewer-rex", "Reviewer-Rex-42", "user name"),
    ],
)
def test_the_password_policy_refuses(store, username, password, why):
    with store.session() as s, pytest.raises(UserError, match=f"^password: .*{why}"):
        create_user(s, username, "reviewer", password)


def test_the_passwords_the_tests_use_pass_the_policy():
    used = {*PASSWORDS.values(), "ops-password-1", "reviewer-password-1", "review-pass-2", "bench-pass-1",
            "long-enough-pw"}
    assert {p: password_problem("someone", p) for p in used} == dict.fromkeys(used)


def test_create_user_script_refuses_a_common_password(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("create_user", SCRIPTS / "create_user.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    db = str(tmp_path / "cli.db")
    assert module.main(["--username", "olga", "--role", "ops", "--password", "password123", "--db", db]) == 2
    assert "password" in capsys.readouterr().err
    good = ["--username", "olga", "--role", "ops", "--password", "olga-ops-pass-7", "--db", db]
    assert module.main(good) == 0


def test_admin_password_file_is_owner_only(tmp_path):
    old = os.umask(0)  # even a permissive umask gets 0600
    try:
        path = console_main.write_admin_password(tmp_path / "var" / "admin-password.txt", "s3cret-generated")
        again = console_main.write_admin_password(path, "second-generated")  # replaces, stays 0600
    finally:
        os.umask(old)
    assert path == again and path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "second-generated\n"
    assert [p.name for p in path.parent.iterdir()] == ["admin-password.txt"]  # no temp file left
    beside = console_main.admin_password_path(f"sqlite:///{tmp_path}/x/p.db")
    assert beside == tmp_path / "x" / "admin-password.txt"
    assert console_main.admin_password_path("postgresql://h/db") == Path("var/admin-password.txt")


def test_first_start_writes_the_password_to_the_file_not_the_terminal(tmp_path, monkeypatch, capsys):
    class Stop(Exception):
        pass

    def stop(*_args, **_kwargs):
        raise Stop  # after the first-start steps, before any model loads

    monkeypatch.setattr(console_main.RunnerConfig, "for_spec", staticmethod(stop))
    monkeypatch.delenv("POLICYOPS_ADMIN_USER", raising=False)
    monkeypatch.delenv("POLICYOPS_ADMIN_PASSWORD", raising=False)
    db = tmp_path / "store" / "policyops.db"
    with pytest.raises(Stop):
        console_main.main(["--db", str(db), "--eval-set", str(tmp_path / "none.jsonl")])
    path = db.parent / "admin-password.txt"
    password = path.read_text().strip()
    out = capsys.readouterr().out
    assert str(path) in out and password not in out
    assert path.stat().st_mode & 0o777 == 0o600
    assert login(open_store(db), "admin", password).ok


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post_login(url: str, username: str, password: str) -> httpx.Response:
    # What Gradio's login form sends: a form-encoded POST to /login.
    return httpx.post(url.rstrip("/") + "/login", data={"username": username, "password": password})


def test_the_sixth_wrong_login_over_http_is_refused_and_audited(served):
    for i in range(MAX_FAILURES):
        response = _post_login(served.url, "rita", f"wrong-guess-{i}")
        assert response.status_code == 400, response.text
    sixth = _post_login(served.url, "rita", "wrong-guess-6")
    right = _post_login(served.url, *served.auth("rita"))  # within the 30 s lock: refused too
    assert (sixth.status_code, right.status_code) == (400, 400)
    assert _post_login(served.url, *served.auth("ann")).status_code == 200  # others still sign in
    with served.store.session() as s:
        failed = [e.actor for e in audit_entries(s, action="login_failed")]
        locked = [e.actor for e in audit_entries(s, action="login_locked")]
    assert failed == ["rita"] * MAX_FAILURES and locked == ["rita", "rita"]


def test_the_client_address_reaches_login_through_gradio(tmp_path, db_url):
    """Gradio's auth callable gets no request; ClientAddressMiddleware hands it the address."""
    store = open_store(db_url)
    with store.session() as s:
        create_user(s, "rita", "reviewer", RITA[1])
    with gr.Blocks() as demo:
        gr.Markdown("hello")
    _, url, _ = demo.launch(
        server_name="127.0.0.1",
        server_port=_free_port(),
        auth=make_auth(store),
        prevent_thread_lock=True,
        quiet=True,
        app_kwargs={"middleware": [Middleware(ClientAddressMiddleware)]},
    )
    try:
        assert _post_login(url, "rita", "wrong-guess").status_code == 400
        assert _post_login(url, *RITA).status_code == 200
    finally:
        demo.close()
    with store.session() as s:
        failed = audit_entries(s, action="login_failed")
        assert json.loads(failed[0].after_json)["address"] == "127.0.0.1"
        assert login_attempt(s, "address", "127.0.0.1").failures == 1


def test_a_sign_in_in_progress_does_not_stall_other_requests(tmp_path, db_url, monkeypatch):
    """The password check (scrypt, database writes) runs off Gradio's event loop: while one sign-in
    is held inside it, the server still answers another request, and the sign-in then completes."""
    import threading

    import app.ui.interface as interface

    entered, release = threading.Event(), threading.Event()
    real_login = interface.login

    def held_login(*args, **kwargs):
        entered.set()
        assert release.wait(30), "never released"
        return real_login(*args, **kwargs)

    monkeypatch.setattr(interface, "login", held_login)
    store = open_store(db_url)
    with store.session() as s:
        create_user(s, "rita", "reviewer", RITA[1])
    with gr.Blocks() as demo:
        gr.Markdown("hello")
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), auth=make_auth(store),
                            prevent_thread_lock=True, quiet=True)
    try:
        result: list[int] = []
        signing_in = threading.Thread(target=lambda: result.append(_post_login(url, *RITA).status_code))
        signing_in.start()
        assert entered.wait(30), "the sign-in never reached the check"
        other = httpx.get(url, timeout=10)  # the sign-in page, served while the check waits
        assert other.status_code == 200
        release.set()
        signing_in.join(30)
        assert result == [200]
    finally:
        release.set()
        demo.close()
