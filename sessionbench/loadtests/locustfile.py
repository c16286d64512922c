"""Realistic chat users against a session-store HTTP service (the sessionbench API).

Point it at any deployment with the same API; only Locust is needed::

    locust -f sessionbench/loadtests/locustfile.py --host https://staging.example \\
        --headless -u 50 -r 10 -t 5m --think-scale 1 --p95 "messages.read=250,*=1000" --max-fail-ratio 0.01

(``locust -f "$(sessionbench loadtest --locustfile)"`` where sessionbench is installed.)

Locust runs every user as a gevent greenlet, so the user is a ``FastHttpUser``
(geventhttpclient: less CPU per request than ``HttpUser``'s requests) and its waits are
gevent sleeps that yield to the other users.
Each simulated user is one person chatting the way ``sessionbench.bench.harness.workload`` describes
(see ``chat_model.py``; ``fallback.py`` where sessionbench is not installed): visits of
a heavy-tailed number of turns; a turn appends the user's message, reads the last
``read_limit`` messages (the ``X-Cache`` response header is counted: hit / miss /
bypass), waits for "the model", appends an assistant reply of realistic size,
sometimes pages back through history, then thinks.  A visit starts by resuming a
session whose resume gap has passed, or a new one; it sometimes lists the user's
sessions, searches, or exports a session.

Requests are grouped by ``name=`` (no session ids in the statistics):

``sessions.create`` ``sessions.get`` ``sessions.list`` ``messages.append_user``
``messages.read`` ``messages.append_assistant`` ``messages.page`` ``search``
``sessions.export``

``X-Cache`` results are extra statistics rows with method ``X-Cache`` (``hit``,
``miss``, ``bypass``, ``none``), carrying the latency of the reads that got that
result.  Locust's usual way to add statistics, ``environment.events.request.fire``,
would also count every read a second time in ``Aggregated``; these rows are logged into
their own entries only, so ``Aggregated``, the request rate and the failure ratio count
real requests only.  The client hit
ratio, hit / (hit + miss + bypass), is printed at the end, written to
``--summary-file`` and exported as ``locust_cache_hit_ratio``.

Auth: ``SESSIONBENCH_TOKENS="tok1,tok2,..."`` (users take them round robin), else
the service's dev tokens ``dev-user1`` .. ``dev-user<--dev-users>``.

Options added by this file (Locust's own ``--help`` does not list them; see the README):
workload (``--seed``, ``--think-scale``, ``--workload k=v,...``, task mix), load
shapes (``--shape ramp|steps|spike|soak``, see ``shapes.py``), thresholds that set the
exit code (see ``thresholds.py``), ``--prometheus-port`` (see ``locust_metrics.py``)
and ``--summary-file``.  See sessionbench/loadtests/README.md.
"""

from __future__ import annotations

import heapq
import importlib
import json
import logging
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locust import FastHttpUser, events, task
from locust.runners import WorkerRunner

# Locust loads this file as the top-level module ``locustfile``.  Its siblings load as the package
# they belong to: ``sessionbench.loadtests`` in a checkout or an installed distribution, or
# ``loadtests`` where this folder was copied alone next to Locust (fallback.py then stands in for
# the workload model).  shapes is imported as a module, so Locust does not pick one of its shape
# classes by itself.
_HERE = Path(__file__).resolve().parent
if _HERE.parent.name == "sessionbench" and (_HERE.parent / "__init__.py").is_file():
    _ROOT, _PACKAGE = _HERE.parents[1], "sessionbench.loadtests"
else:
    _ROOT, _PACKAGE = _HERE.parent, _HERE.name
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
if TYPE_CHECKING:
    from sessionbench.loadtests import chat_model, groups, locust_metrics, shapes
    from sessionbench.loadtests import thresholds as th
else:
    chat_model, groups, locust_metrics, shapes, th = (
        importlib.import_module(f"{_PACKAGE}.{name}")
        for name in ("chat_model", "groups", "locust_metrics", "shapes", "thresholds")
    )

logger = logging.getLogger("sessionbench.locust")

MAX_PENDING_RESUMES = 1000  # per user; beyond this the furthest-due resume is forgotten
EXPORT_FORMATS = ("jsonl", "csv", "markdown")


# --------------------------------------------------------------------------- options


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_options(parser: Any) -> None:
    defaults = chat_model.defaults()
    a = parser.add_argument
    # workload
    a("--seed", type=int, default=defaults["seed"], help="workload seed (users derive theirs from it)")
    a(
        "--think-scale",
        type=float,
        default=1.0,
        help="multiply every wait (think time, model response time, resume gap) after time compression; 0 = no waits",
    )
    a("--workload", default="", help="override workload fields: 'think_time_median=10,read_limit=50'")
    a(
        "--dev-users",
        type=int,
        default=10,
        help="without SESSIONBENCH_TOKENS, use dev tokens dev-user1..dev-userN (default 10)",
    )
    a("--list-probability", type=float, default=0.3, help="chance a visit starts by listing sessions (0.3)")
    a("--search-probability", type=float, default=0.05, help="chance a visit includes a search (0.05)")
    a("--export-probability", type=float, default=0.02, help="chance a visit ends with an export (0.02)")
    a(
        "--turn-shaped",
        action="store_true",
        default=False,
        help="send the user's message and the read as one request (POST .../messages?window=N, the store's "
        "add_and_read) instead of a POST then a GET",
    )
    # load shapes
    a(
        "--shape",
        choices=shapes.NAMES,
        default="none",
        help="load shape; -u is its peak, -r its spawn rate, -t its duration (none: plain -u/-r/-t)",
    )
    a("--ramp-up", type=float, default=30.0, help="ramp/soak: seconds to reach -u (30)")
    a("--ramp-down", type=float, default=0.0, help="ramp/soak: seconds to go down before the end (0)")
    a("--step-users", type=int, default=0, help="steps: users added per step (default -u/5)")
    a("--step-time", type=float, default=30.0, help="steps: seconds per step (30)")
    a("--spike-base", type=int, default=0, help="spike: users outside the spike (default -u/10)")
    a("--spike-at", type=float, default=30.0, help="spike: seconds before the spike (30)")
    a("--spike-length", type=float, default=30.0, help="spike: seconds the spike lasts (30)")
    # thresholds (checked at the end; any failing check sets exit code 3)
    for key in th.PERCENTILES:
        a(
            f"--{key}",
            default=None,
            include_in_web_ui=False,
            help=f"max {key} response time in ms: 'GROUP=MS,...' ('*' = every group, 'Aggregated' = all requests)",
        )
    a("--max-fail-ratio", type=float, default=None, include_in_web_ui=False, help="max failed/all requests")
    a("--min-rps", type=float, default=None, include_in_web_ui=False, help="min requests per second over the run")
    a("--min-hit-ratio", type=float, default=None, include_in_web_ui=False, help="min X-Cache hit/(hit+miss+bypass)")
    a("--thresholds", default=None, include_in_web_ui=False, help="thresholds file (.toml or .json)")
    # outputs
    a(
        "--prometheus-port",
        type=int,
        default=0,
        include_in_web_ui=False,
        help="serve Locust statistics as Prometheus metrics on this port (master / local run only)",
    )
    a("--prometheus-host", default="127.0.0.1", include_in_web_ui=False, help="bind address for --prometheus-port")
    a(
        "--summary-file",
        default=None,
        include_in_web_ui=False,
        help="write a JSON summary (groups, cache, hit ratio, thresholds) at the end",
    )


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a user needs, built from the (possibly master-sent) options."""

    model: chat_model.ChatModel
    seed: int
    tokens: tuple[str, ...]
    list_p: float
    search_p: float
    export_p: float
    workload_source: str
    turn_shaped: bool = False


_config_cache: dict[tuple[Any, ...], Config] = {}


def tokens_from_env(dev_users: int) -> tuple[str, ...]:
    raw = os.environ.get("SESSIONBENCH_TOKENS", "")
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    return tokens or tuple(f"dev-user{i}" for i in range(1, max(1, dev_users) + 1))


def config_for(options: Any) -> Config:
    """Build (once per distinct option set) the user configuration."""
    key = tuple(
        getattr(options, name, None)
        for name in ("seed", "think_scale", "workload", "dev_users", "list_probability",
                     "search_probability", "export_probability", "turn_shaped")
    )  # fmt: skip
    cached = _config_cache.get(key)
    if cached is not None:
        return cached
    config = Config(
        model=chat_model.ChatModel(chat_model.workload_from(options.workload or ""), think_scale=options.think_scale),
        seed=options.seed,
        tokens=tokens_from_env(options.dev_users),
        list_p=options.list_probability,
        search_p=options.search_probability,
        export_p=options.export_probability,
        workload_source=chat_model.SOURCE,
        turn_shaped=bool(getattr(options, "turn_shaped", False)),
    )
    _config_cache[key] = config
    return config


def thresholds_from(options: Any) -> list[th.Threshold]:
    result: list[th.Threshold] = []
    if options.thresholds:
        result.extend(th.load_file(options.thresholds))
    for key in th.PERCENTILES:
        spec = getattr(options, key, None)
        if spec:
            result.extend(th.parse_percentile_option(key, spec))
    for kind, value in (("max_fail_ratio", options.max_fail_ratio), ("min_rps", options.min_rps),
                        ("min_hit_ratio", options.min_hit_ratio)):  # fmt: skip
        if value is not None:
            result.append(th.Threshold(kind, float(value)))
    return result


def shape_from(options: Any) -> shapes.ChatShape | None:
    if options.shape == "none":
        return None
    return shapes.build(
        options.shape,
        peak=options.num_users or 10,
        spawn_rate=options.spawn_rate,
        duration=options.run_time or None,
        ramp_up=options.ramp_up,
        ramp_down=options.ramp_down,
        step_users=options.step_users or None,
        step_time=options.step_time,
        spike_base=options.spike_base or None,
        spike_at=options.spike_at,
        spike_length=options.spike_length,
    )


# --------------------------------------------------------------------------- the user


@dataclass(slots=True)
class _Session:
    session_id: str
    resume_p: float
    messages: int = 0


@dataclass(slots=True)
class _UserState:
    rng: random.Random
    token: str
    current: _Session | None = None
    turns_left: int = 0
    pending: list[tuple[float, int, _Session]] = field(default_factory=list)  # (due, tie, session)
    tie: int = 0


_user_counter = 0


class ChatUser(FastHttpUser):
    """One person chatting: visits of several turns, resumes after gaps, occasional list/search/export."""

    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        global _user_counter
        options = self.environment.parsed_options
        self.cfg = config_for(options)
        worker = int(getattr(self.environment.runner, "worker_index", 0) or 0)
        index = _user_counter
        _user_counter += 1
        rng = random.Random(f"{self.cfg.seed}:{worker}:{index}")
        token = self.cfg.tokens[(worker * 7919 + index) % len(self.cfg.tokens)]
        self.state = _UserState(rng=rng, token=token)
        self.headers = {"Authorization": f"Bearer {token}"}

    def wait_time(self) -> float:
        return self.cfg.model.think_time(self.state.rng)

    # -- a visit and its turns ------------------------------------------------------------
    @task
    def chat(self) -> None:
        st = self.state
        if st.current is None or st.turns_left <= 0:
            self._end_visit()
            self._start_visit()
        self._turn()
        st.turns_left -= 1

    def _start_visit(self) -> None:
        st, cfg = self.state, self.cfg
        if st.rng.random() < cfg.list_p:
            self.client.get("/v1/sessions?limit=20", name=groups.LIST, headers=self.headers)
        if st.pending and st.pending[0][0] <= time.monotonic():
            _, _, session = heapq.heappop(st.pending)
            self.client.get(f"/v1/sessions/{session.session_id}", name=groups.GET_SESSION, headers=self.headers)
        else:
            sid = str(uuid.UUID(int=st.rng.getrandbits(128), version=4))
            session = _Session(sid, cfg.model.resume_probability(st.rng))
            body = {"session_id": sid, "metadata": {"client": "locust"}}
            self.client.post("/v1/sessions", json=body, name=groups.CREATE, headers=self.headers)
        st.current = session
        st.turns_left = cfg.model.turns(st.rng)
        if st.rng.random() < cfg.search_p:
            term = chat_model.search_term(st.rng)
            self.client.get(f"/v1/search?q={term}&limit=20", name=groups.SEARCH, headers=self.headers)

    def _end_visit(self) -> None:
        st, cfg = self.state, self.cfg
        session = st.current
        if session is None:
            return
        if st.rng.random() < cfg.export_p:
            fmt = st.rng.choice(EXPORT_FORMATS)
            self.client.get(f"/v1/sessions/{session.session_id}/export?format={fmt}", name=groups.EXPORT,
                            headers=self.headers)  # fmt: skip
        if st.rng.random() < session.resume_p:
            st.tie += 1
            heapq.heappush(st.pending, (time.monotonic() + cfg.model.resume_gap(st.rng), st.tie, session))
            if len(st.pending) > MAX_PENDING_RESUMES:
                st.pending.remove(max(st.pending))
                heapq.heapify(st.pending)
        st.current = None

    def _turn(self) -> None:
        st, model = self.state, self.cfg.model
        session = st.current
        assert session is not None
        path = f"/v1/sessions/{session.session_id}/messages"
        content = chat_model.text(st.rng, model.user_bytes(st.rng))
        if self.cfg.turn_shaped:  # one request: the append returns the window the read would
            t0 = time.perf_counter()
            resp = self.client.post(f"{path}?window={model.read_limit}", json={"role": "user", "content": content},
                                    name=groups.APPEND_READ, headers=self.headers)  # fmt: skip
            oldest = self._count_read(resp, (time.perf_counter() - t0) * 1000.0, "window")
            if _ok(resp):
                session.messages += 1
        else:
            resp = self.client.post(path, json={"role": "user", "content": content}, name=groups.APPEND_USER,
                                    headers=self.headers)  # fmt: skip
            if _ok(resp):
                session.messages += 1
            oldest = self._read(path, f"{path}?limit={model.read_limit}", groups.READ)
        answer_wait = model.response_time(st.rng)  # "the model" thinking between read and reply
        if answer_wait > 0:
            self._sleep(answer_wait)
        content = chat_model.text(st.rng, model.assistant_bytes(st.rng))
        resp = self.client.post(path, json={"role": "assistant", "content": content}, name=groups.APPEND_ASSISTANT,
                                headers=self.headers)  # fmt: skip
        if _ok(resp):
            session.messages += 1
        if oldest is not None and oldest > 1 and st.rng.random() < model.page_probability:
            self._read(path, f"{path}?limit={model.read_limit}&before_seq={oldest}", groups.PAGE)

    def _read(self, path: str, url: str, name: str) -> int | None:
        """GET messages; count the X-Cache result; return the oldest ``seq`` returned."""
        t0 = time.perf_counter()
        resp = self.client.get(url, name=name, headers=self.headers)
        return self._count_read(resp, (time.perf_counter() - t0) * 1000.0, "messages")

    def _count_read(self, resp: Any, elapsed_ms: float, key: str) -> int | None:
        """Count a read's X-Cache result; the oldest ``seq`` of the body's ``key`` list (None: failed)."""
        if not _ok(resp):
            return None
        header = (resp.headers.get("X-Cache") if resp.headers else None) or "none"
        value = str(header).strip().lower()
        self.environment.stats.get(value if value in groups.CACHE_RESULTS else "none", groups.CACHE_METHOD).log(
            elapsed_ms, 0
        )
        try:
            messages = resp.json().get(key) or []
            return int(messages[0]["seq"]) if messages else None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def _sleep(seconds: float) -> None:
        time.sleep(seconds)  # gevent-patched: yields to other users


# --------------------------------------------------------------------------- run lifecycle


def snapshot_from_stats(stats: Any) -> th.Snapshot:
    """Locust's ``RequestStats`` -> the plain snapshot thresholds and summaries use."""

    def group(entry: Any) -> th.GroupStats:
        pct = {k: float(entry.get_response_time_percentile(q)) for k, q in th.PERCENTILES.items() if k != "max"}
        pct["max"] = float(entry.max_response_time or 0)
        return th.GroupStats(entry.num_requests, entry.num_failures, float(entry.total_rps), pct)

    by_name: dict[str, th.GroupStats] = {}
    cache: dict[str, int] = {}
    for (name, method), entry in stats.entries.items():
        if method == groups.CACHE_METHOD:
            cache[name] = entry.num_requests
        elif entry.num_requests or entry.num_failures:
            by_name[name if name not in by_name else f"{method} {name}"] = group(entry)
    return th.Snapshot(groups=by_name, total=group(stats.total), cache=cache)


@events.init.add_listener  # type: ignore[untyped-decorator]
def _on_init(environment: Any, runner: Any = None, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None or isinstance(runner, WorkerRunner):
        return  # workers get the master's options with each spawn message
    try:
        cfg = config_for(options)
        environment.sessionbench_thresholds = thresholds_from(options)
        shape = shape_from(options)
    except (ValueError, th.ThresholdError) as exc:
        raise SystemExit(f"sessionbench: {exc}") from None
    logger.info("workload model from %s; %d auth token(s)", cfg.workload_source, len(cfg.tokens))
    if shape is not None:
        shape.runner = runner
        environment.shape_class = shape
        logger.info("load shape %s", shape.describe())
    if options.prometheus_port:
        collector = locust_metrics.LocustCollector(
            environment, cache_method=groups.CACHE_METHOD, cache_results=groups.CACHE_RESULTS
        )
        locust_metrics.serve(collector, options.prometheus_host, options.prometheus_port)
        logger.info("Prometheus metrics on http://%s:%d/metrics", options.prometheus_host, options.prometheus_port)


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _on_quitting(environment: Any, **_kwargs: Any) -> None:
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    snap = snapshot_from_stats(runner.stats)
    counts = ", ".join(f"{k} {snap.cache.get(k, 0)}" for k in groups.CACHE_RESULTS)
    ratio = snap.hit_ratio
    _report(f"client X-Cache hit ratio {'n/a' if ratio is None else f'{ratio:.3f}'} ({counts})")
    checks = getattr(environment, "sessionbench_thresholds", [])
    outcomes = th.evaluate(checks, snap)
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        _report(f"threshold {'ok' if o.ok else 'FAILED'}: {o.line}")
    if failed:
        _report(f"{len(failed)} of {len(outcomes)} threshold checks failed (exit code 3)")
        environment.process_exit_code = 3
    elif outcomes and not runner.exceptions:
        environment.process_exit_code = 0  # within the thresholds: tolerated failures do not fail the run
    options = environment.parsed_options
    if options is not None and options.summary_file:
        summary = snap.to_json()
        summary["thresholds"] = [{"check": o.threshold.describe(), "ok": o.ok, "line": o.line} for o in outcomes]
        summary["exit_code"] = environment.process_exit_code
        summary["options"] = {
            k: getattr(options, k, None)
            for k in ("seed", "think_scale", "workload", "shape", "num_users", "spawn_rate", "run_time", "host")
        }
        path = Path(options.summary_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _ok(resp: Any) -> bool:
    """A 2xx answer (``resp.ok`` is true for connection errors, whose status is 0)."""
    return 200 <= (resp.status_code or 0) < 300


def _report(line: str) -> None:
    print(f"sessionbench: {line}", file=sys.stderr, flush=True)
