"""Ray executors: protocol clients in Ray actors (secagg.ray_transport) and local training as Ray tasks
(rfa.fl.ray_executor) give the results of the paths they replace.

All tests of this module share one local Ray instance (2 CPUs, module-scoped fixture; the module is one
xdist group so a parallel run starts it once); the Ctrl-C test starts its own in a subprocess.

* Protocol: for fixed schedules with a dropout at every round (before and after sending), on the complete
  graph and on SecAgg+, in both variants, and for a random sample of scenarios (hypothesis), the Ray run
  equals the in-process run for the same seed: sum (values, dtype), U1..U5, ledger entries *in order*,
  every message on the wire byte for byte (digests, in order), client errors, rejected uploads, the
  client mirrors, or the same ProtocolAborted.
* Failures: a client task that raises (not a SecAggError), and an actor killed between rounds, count as
  the affected clients' dropouts at that round: the result equals the serial run given that schedule.
* A local instance started by the project listens on loopback only; the dashboard is off.
* Training: the Ray executor equals the process-pool executor with the same grouping bit for bit, and the
  serial executor within a tolerance stated in the test; a failing training task is a typed error.
* Without Ray the default paths never import it, and ``executor="ray"`` says how to install it.
* Ctrl-C during ``secagg simulate --executor ray``: exit 130, the local cluster's processes are gone.
* ``rfa compare --executor ray``: the process pool's results.csv with the same grouping, serial's within a
  stated tolerance; SIGTERM in a subprocess: exit 130, one line saying what was saved, the finished runs
  intact, no Ray process left, and ``--resume`` ends with the uninterrupted sweep's results. A signal
  while the driver waits on Ray reaches the caller's own handler, and the tasks are cancelled.
No timing assertions.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.commands.simulate import random_inputs
from secagg.errors import InvalidInput, ProtocolAborted
from secagg.messages import ROUNDS
from secagg.protocol import Session

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]'")

from secagg.ray_transport import RayTransport, dumps_clients, ray_cluster  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")

VARIANTS = ("honest-but-curious", "active")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance (2 CPUs) for every test of this module."""
    with ray_cluster(num_cpus=2) as r:
        yield r
    assert not ray.is_initialized()


def _err(e) -> tuple | None:  # noqa: ANN001
    return None if e is None else (type(e), str(e), getattr(e, "round", None), getattr(e, "party", None))


def _outcome(session: Session) -> dict:
    """Everything observable about one run except timings (the Ray path must reproduce it exactly)."""
    out: dict = {}
    try:
        res = session.run()
    except ProtocolAborted as exc:
        out["aborted"] = (exc.round, exc.reason, exc.party)
        out["ledger"] = list(exc.ledger)
        out["client_errors"] = {u: _err(e) for u, e in exc.client_errors.items()}
        out["sets"] = dict(exc.sets)
    else:
        out["sum"] = (res.sum.dtype, res.sum.tolist())
        out["included"] = res.included
        out["sets"] = res.sets
        out["ledger"] = list(res.ledger)
        out["client_errors"] = {u: _err(e) for u, e in res.client_errors.items()}
        out["rejected"] = {u: _err(e) for u, e in res.rejected.items()}
        out["params"] = (res.threshold, res.n, res.dim, res.modulus, res.variant, res.session, res.graph_name)
    out["clients"] = {u: (_err(c.aborted), c.released, c.views) for u, c in session.clients.items()}
    return out


class _Wire:
    """Interceptor recording a digest of every message in flight, in order (the messages must be the
    same bytes, not only the same sizes: same keys, ciphertexts and masked inputs)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, str]] = []

    def __call__(self, round: str, direction: str, u: int, data: bytes) -> bytes:
        self.seen.append((round, direction, u, hashlib.sha256(data).hexdigest()))
        return data


def _pair(xs, **kw) -> tuple[dict, dict, Session]:  # noqa: ANN001
    w1, w2 = _Wire(), _Wire()
    serial = _outcome(Session(xs, interceptor=w1, **kw))
    s = Session(xs, executor="ray", interceptor=w2, **kw)
    assert isinstance(s.transport, RayTransport)
    remote = _outcome(s)
    serial["wire"], remote["wire"] = w1.seen, w2.seen
    assert serial["wire"]
    return serial, remote, s


# ------------------------------------------------------------------------------------------------
# protocol: bit-identical to the in-process path
# ------------------------------------------------------------------------------------------------
EVERY_ROUND = {0: "advertise-keys", 1: "share-keys:after", 2: "masked-input", 3: "masked-input:after",
               4: "consistency-check", 5: "unmasking", 6: "advertise-keys:after", 7: "unmasking:after"}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("graph", ["complete", "secagg+"])
def test_dropouts_at_every_round_give_the_serial_run(variant, graph) -> None:  # noqa: ANN001
    n, d, m = 22, 37, 2**32
    xs = random_inputs(n, d, m, 5)
    kw = dict(modulus=m, variant=variant, dropouts=EVERY_ROUND, seed=11)
    if graph == "secagg+":
        # the survivor bound ceil((1 - delta) n) must admit the 6 clients that drop before unmasking
        kw.update(graph="secagg+", neighbours=14, threshold=9, dropout_fraction=0.5)
    serial, remote, s = _pair(xs, **kw)
    assert "sum" in serial, serial.get("aborted")  # the schedule is meant to complete
    assert remote == serial
    assert s.transport.failures == {}


def test_an_aborting_schedule_aborts_the_same_way() -> None:
    xs = random_inputs(8, 5, 2**16, 2)
    kw = dict(modulus=2**16, threshold=6, dropouts={u: "masked-input" for u in range(3)}, seed=4)
    serial, remote, _ = _pair(xs, **kw)
    assert serial["aborted"][0] == "masked-input"
    assert remote == serial


drop_specs = st.sampled_from([f"{r}{suffix}" for r in ROUNDS for suffix in ("", ":after")])


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 12))
    variant = draw(st.sampled_from(VARIANTS))
    sparse = n >= 5 and draw(st.booleans())
    k = 2 * draw(st.integers(1, (n - 2) // 2)) if sparse else None
    holders = (k + 1) if sparse else n
    # active: 2t > holders, and on SecAgg+ 2t > k + 2 (secagg.rules.check_interleaving_threshold)
    low = max(2, holders // 2 + 1, (k // 2 + 2) if sparse else 0) if variant == "active" else 2
    t = draw(st.integers(low, holders))
    d = draw(st.integers(1, 16))
    m = draw(st.sampled_from([2**8, 2**32, 2**64, 251, 2**31 - 1]))
    schedule = draw(st.dictionaries(st.integers(0, n - 1), drop_specs, max_size=n))
    return n, variant, k, t, d, m, schedule, draw(st.integers(0, 2**32))


@pytest.mark.slow
@settings(max_examples=8)
@given(scenarios())
def test_random_scenarios_give_the_serial_run(case) -> None:  # noqa: ANN001
    n, variant, k, t, d, m, schedule, seed = case
    kw = dict(modulus=m, threshold=t, variant=variant, dropouts=schedule, seed=seed)
    if k is not None:
        kw.update(graph="secagg+", neighbours=k)
    serial, remote, _ = _pair(random_inputs(n, d, m, seed), **kw)
    assert remote == serial


def test_small_chunks_and_many_actors_change_nothing() -> None:
    """One client per call and one actor per client: the streaming order is still the serial one."""
    xs = random_inputs(9, 7, 2**32, 3)
    kw = dict(modulus=2**32, dropouts={2: "masked-input", 5: "share-keys:after"}, seed=9)
    w1, w2 = _Wire(), _Wire()
    serial = _outcome(Session(xs, interceptor=w1, **kw))
    s = Session(xs, executor="ray", **kw)
    s.transport = RayTransport(s.clients, s.server, s.transport.dropouts, w2, actors=9, chunk=1)
    assert _outcome(s) == serial and w1.seen == w2.seen


# ------------------------------------------------------------------------------------------------
# failures are dropouts
# ------------------------------------------------------------------------------------------------
def test_a_failing_client_task_is_that_clients_dropout() -> None:
    n, d, m = 12, 20, 2**32
    xs = random_inputs(n, d, m, 7)
    kw = dict(modulus=m, variant="active", seed=3)
    s = Session(xs, executor="ray", dropouts={9: "unmasking"}, **kw)
    s.clients[4].masked_input_collection = None  # its masked-input task raises TypeError in its actor
    remote = _outcome(s)
    assert set(s.transport.failures) == {4}
    rnd, why = s.transport.failures[4]
    assert rnd == "masked-input" and "TypeError" in why
    serial = _outcome(Session(xs, dropouts={9: "unmasking", 4: "masked-input"}, **kw))
    assert "sum" in serial and 4 not in serial["included"]
    remote["clients"].pop(4), serial["clients"].pop(4)  # the crashed client's own mirror is not compared
    assert remote == serial


def test_a_dead_actor_drops_its_clients_at_that_round() -> None:
    """An actor killed after the share-keys round: its live clients drop before sending y_u."""
    n, d, m = 14, 9, 2**32
    xs = random_inputs(n, d, m, 1)
    kw = dict(modulus=m, threshold=6, seed=8)
    box: dict = {}

    def kill_after_share_keys(round: str, direction: str, u: int, data: bytes) -> bytes:
        if round == "share-keys" and direction == "down" and "done" not in box:
            box["done"] = True
            tr = box["session"].transport
            victim = tr.actor_handles[tr.slot[1]]
            ray.kill(victim, no_restart=True)
            # ray.kill is asynchronous: on a busy machine the actor could still run its masked-input calls
            # (its clients would then fail a round later); wait until Ray reports it dead
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    ray.get(victim.size.remote(), timeout=10)
                except ray.exceptions.RayActorError:
                    break
                except ray.exceptions.GetTimeoutError:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail("the killed actor still answers")
        return data

    s = Session(xs, executor="ray", dropouts={0: "share-keys"}, interceptor=kill_after_share_keys, **kw)
    box["session"] = s
    remote = _outcome(s)
    victims = {u for u in range(n) if s.transport.slot[u] == s.transport.slot[1] and u != 0}
    assert victims and set(s.transport.failures) == victims
    assert all(r == "masked-input" for r, _ in s.transport.failures.values())
    schedule = {0: "share-keys", **{u: "masked-input" for u in victims}}
    serial = _outcome(Session(xs, dropouts=schedule, **kw))
    assert "sum" in serial
    for u in victims:  # their mirrors stop where the actor died; the serial dropouts never ran that round
        remote["clients"].pop(u), serial["clients"].pop(u)
    assert remote == serial


def test_started_clients_cannot_be_shipped() -> None:
    s = Session(random_inputs(3, 2, 2**8, 0), modulus=2**8, seed=1)
    s.clients[0].advertise_keys()
    with pytest.raises(Exception, match="already run a round"):
        dumps_clients(s.clients)


# ------------------------------------------------------------------------------------------------
# a local instance stays local
# ------------------------------------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    from bench.scale import descendants  # the benchmark's /proc walk (it sums the Ray actors' memory)

    return descendants(pid)


def _listening(pids: set[int]) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the TCP sockets these processes listen on."""
    inodes = set()
    for p in pids:
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                link = os.readlink(f"/proc/{p}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    addrs = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                    addrs.append(cols[1].split(":")[0])
    return addrs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_instance_listens_on_loopback_only() -> None:
    ray.get([ray.remote(lambda: 1).remote() for _ in range(2)])  # workers up
    addrs = _listening(_descendants(os.getpid()) | {os.getpid()})
    assert len(addrs) >= 3  # GCS, raylet, workers at least
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    assert set(addrs) <= loopback, addrs
    assert os.environ.get("RAY_USAGE_STATS_ENABLED") == "0"
    # Ray keeps a minimal dashboard head for its internal modules; the web UI must be off
    cmdlines = []
    for p in _descendants(os.getpid()):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmdlines.append(f.read().decode(errors="replace"))
        except OSError:
            continue
    heads = [c for c in cmdlines if "dashboard/dashboard.py" in c]
    assert all("--disable-frontend" in c and "--minimal" in c for c in heads), heads
    # the workers run at the driver's priority (Ray's default would be nice 15)
    def nice(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])

    workers = ray.get([ray.remote(lambda: os.getpid()).remote() for _ in range(2)])
    assert {nice(p) for p in workers} == {nice(os.getpid())}


# ------------------------------------------------------------------------------------------------
# local training
# ------------------------------------------------------------------------------------------------
def _fl_cfg(**kw):  # noqa: ANN202
    from rfa.fl.config import FLConfig

    base = dict(dataset="digits", model="linear", num_clients=8, clients_per_round=6, rounds=2, local_steps=3,
                local_epochs=None, batch_size=8, lr=0.1, eval_every=1, seed=3, device="cpu", aggregator="fedavg")
    base.update(kw)
    return FLConfig(**base)


@pytest.fixture(scope="module")
def digits():  # noqa: ANN201
    from rfa.fl.data import load_digits
    from rfa.fl.partition import partition

    return partition(load_digits(), name="digits", scheme="iid", num_clients=8, seed=0)


def test_training_on_ray_equals_the_process_pool_and_is_close_to_serial(digits) -> None:  # noqa: ANN001
    from rfa.fl.executor import ProcessExecutor, SerialExecutor
    from rfa.fl.loop import run
    from rfa.fl.ray_executor import RayExecutor

    cfg = _fl_cfg()
    pool = ProcessExecutor(workers=2)
    try:
        a = run(cfg, data=digits, executor=pool)
    finally:
        pool.close()
    b = run(cfg, data=digits, executor=RayExecutor(groups=2))
    assert torch.equal(a.w, b.w)  # same groups, same kernels, one thread each: bit for bit
    assert a.history == b.history
    c = run(cfg, data=digits, executor=SerialExecutor())
    # serial batches all 6 clients in one kernel; the groups differ only in float32 summation order
    # inside each step's gradient (sums of B*d_in = 8*64 products): a relative error of a few float32
    # ulps (eps = 1.2e-7) per step, over 2 rounds x 3 steps, well inside rtol 1e-4 / atol 1e-5
    torch.testing.assert_close(b.w, c.w, rtol=1e-4, atol=1e-5)


def test_ray_training_uses_the_cluster_cpus_by_default(digits) -> None:  # noqa: ANN001
    from rfa.fl.executor import LocalTask, local_sgd
    from rfa.fl.models import make_model
    from rfa.fl.ray_executor import RayExecutor

    model = make_model("linear", digits.input_shape, digits.num_classes)
    clients = np.array([0, 2, 3, 5, 7])
    start = model.init_vector(0).unsqueeze(0).expand(len(clients), -1).contiguous()
    task = LocalTask(model, digits, clients, start, np.full(5, 2), 4, 0.1, 123)
    ex = RayExecutor()
    out = ex.run(task)
    # two groups (2 CPUs): [0, 1, 2] and [3, 4], each one local_sgd call on one thread
    torch.set_num_threads(1)
    want = torch.cat([local_sgd(task, np.arange(3)), local_sgd(task, np.arange(3, 5))])
    assert torch.equal(out, want)


def test_a_failing_training_task_is_a_typed_error(digits) -> None:  # noqa: ANN001
    from rfa.fl.executor import LocalTask
    from rfa.fl.models import make_model
    from rfa.fl.ray_executor import LocalTrainingFailed, RayExecutor

    model = make_model("linear", digits.input_shape, digits.num_classes)
    clients = np.array([0, 1, 2, 3])
    start = model.init_vector(0).unsqueeze(0).expand(4, -1).contiguous()
    bad = LocalTask(model, digits, clients, start, np.array([1, 1, 1, 1]), 4, 0.1, 1, epochs=False)
    bad.steps = np.array([1, 1, -5, 1])  # a negative step count: the second group's task raises
    with pytest.raises(LocalTrainingFailed) as info:
        RayExecutor(groups=2).run(bad)
    assert info.value.clients == [2, 3]


class _Stop(Exception):
    pass


def test_a_signal_during_local_training_reaches_the_callers_handler_and_cancels_the_tasks(digits) -> None:  # noqa: ANN001
    """SIGTERM while the driver waits on Ray: the caller's own handler runs (inside ``ray.get`` Ray would
    replace its exception by a bare KeyboardInterrupt or a SystemError), then the tasks are cancelled."""
    import threading

    from rfa.fl.executor import LocalTask
    from rfa.fl.models import make_model
    from rfa.fl.ray_executor import RayExecutor

    model = make_model("linear", digits.input_shape, digits.num_classes)
    clients = np.array([0, 1, 2, 3])
    start = model.init_vector(0).unsqueeze(0).expand(4, -1).contiguous()
    endless = LocalTask(model, digits, clients, start, np.full(4, 300_000), 4, 0.1, 1)  # minutes of SGD steps

    def stop(signum, _frame):  # noqa: ANN001, ANN202
        raise _Stop(signum)

    old = signal.signal(signal.SIGTERM, stop)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        with pytest.raises(_Stop) as info:
            RayExecutor(groups=2).run(endless)
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, old)
    assert info.value.args == (signal.SIGTERM,)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2  # both training tasks were cancelled


# ------------------------------------------------------------------------------------------------
# optional extra: default paths never import Ray; without it, executor="ray" says how to install it
# ------------------------------------------------------------------------------------------------
def test_default_paths_do_not_import_ray() -> None:
    code = ("import sys, numpy as np, secagg\n"
            "secagg.run_secure_aggregation(np.ones((4, 3), dtype=np.uint32), modulus=2**8, seed=0, workers=2)\n"
            "from rfa.fl.config import FLConfig; from rfa.fl.loop import run\n"
            "run(FLConfig(dataset='digits', num_clients=4, clients_per_round=2, rounds=1, local_steps=1, local_epochs=None,"
            " device='cpu', executor='threads'))\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def test_without_ray_executor_ray_says_how_to_install(monkeypatch, capsys) -> None:  # noqa: ANN001
    from rfa.fl.executor import make_executor
    from secagg.cli import main as secagg_main

    monkeypatch.setitem(sys.modules, "ray", None)  # what an installation without the extra sees
    with pytest.raises(InvalidInput, match=r"pip install"):
        Session(random_inputs(3, 2, 2**8, 0), modulus=2**8, executor="ray")
    with pytest.raises(InvalidInput, match=r"pip install"):
        make_executor("ray")
    assert secagg_main(["simulate", "-n", "3", "-d", "2", "--executor", "ray"]) == 2
    assert "pip install" in capsys.readouterr().err


def test_executor_arguments_are_validated() -> None:
    xs = random_inputs(3, 2, 2**8, 0)
    with pytest.raises(InvalidInput, match="executor"):
        Session(xs, modulus=2**8, executor="spark")
    with pytest.raises(InvalidInput, match="replaces workers"):
        Session(xs, modulus=2**8, executor="ray", workers=2)
    with pytest.raises(InvalidInput, match="ray_address"):
        Session(xs, modulus=2**8, ray_address="127.0.0.1:6379")


def test_simulate_with_executor_ray_gives_the_serial_report() -> None:
    from secagg.commands.simulate import simulate

    kw = dict(clients=12, dim=50, drops=["3:share-keys", "5:masked-input:after"], seed=4)
    a, b = simulate(**kw), simulate(executor="ray", **kw)
    assert a["ok"], a.get("aborted")
    a.pop("timings"), b.pop("timings")
    assert a == b


# ------------------------------------------------------------------------------------------------
# Ctrl-C
# ------------------------------------------------------------------------------------------------
def _processes_mentioning(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(p))
            except OSError:
                continue
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_cancels_the_tasks_and_shuts_the_local_cluster_down(tmp_path) -> None:  # noqa: ANN001
    tmp = f"/tmp/rt{os.getpid()}"  # short: Ray's socket paths must fit in 107 bytes
    env = dict(os.environ, RAY_TMPDIR=tmp, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "secagg.cli", "simulate", "-n", "400", "-d", "20000", "--graph", "secagg+",
           "--executor", "ray"]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in p.stdout:  # wait until the cluster is up
            lines.append(line)
            if "executor ray" in line:
                break
        time.sleep(2.0)  # the actors are being created or the clients are computing
        # the command's own Ray processes (GCS, raylet, agents, actors), by pid: what Ctrl-C must stop
        ours = {q for q in _descendants(p.pid) if "ray" in _cmdline(q)}
        assert p.poll() is None, "".join(lines)
        assert ours, "no Ray process below the command"
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    deadline = time.monotonic() + 30
    while (_alive(ours) or _processes_mentioning(tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)  # raylet and workers exit once the GCS is gone
    assert _alive(ours) == set() and _processes_mentioning(tmp) == []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pids: set[int]) -> set[int]:
    """The pids still running (a zombie, or a pid reused by a process that is not Ray's, counts as gone)."""
    out = set()
    for q in pids:
        try:
            with open(f"/proc/{q}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and "ray" in _cmdline(q):
            out.add(q)
    return out


def test_rfa_train_executor_ray_gives_the_process_pool_result(tmp_path) -> None:  # noqa: ANN001
    """``rfa train --executor ray`` on the module's instance (2 CPUs: two groups) = ``--executor processes``
    (two workers: the same two groups), metric for metric."""
    import json

    from rfa.cli import main as rfa_main

    common = ["train", "--data", "digits", "--clients", "6", "--clients-per-round", "4", "--rounds", "2",
              "--local-steps", "2", "--device", "cpu", "--quiet"]
    got = {}
    for ex in ("processes", "ray"):
        assert rfa_main(common + ["--executor", ex, "--out", str(tmp_path / ex)]) == 0
        rec = json.loads((tmp_path / ex / "result.json").read_text())
        got[ex] = (rec["final"], rec["history"])
    for final, history in got.values():
        final.pop("wall_time_s")  # the only field allowed to differ
        for h in history:
            h.pop("wall_time_s", None)
    assert got["ray"] == got["processes"]


# ------------------------------------------------------------------------------------------------
# rfa compare --executor ray
# ------------------------------------------------------------------------------------------------
TINY_SWEEP = ["--data", "digits", "--clients", "8", "--clients-per-round", "6", "--rounds", "3", "--local-steps", "3",
              "--device", "cpu", "--no-plots", "--no-progress"]
# the columns computed from the models' values; every other column is fixed by the configuration
MODEL_COLUMNS = ("accuracy", "test_correct", "test_loss", "max_effective_weight")


def _results(folder) -> list[dict]:  # noqa: ANN001
    import csv

    rows = list(csv.DictReader(open(folder / "results.csv", newline="")))
    for r in rows:
        r.pop("wall_time_s")  # the only column allowed to differ between executors
    assert rows
    return rows


@pytest.mark.slow
def test_rfa_compare_executor_ray_gives_the_process_pool_results(tmp_path) -> None:  # noqa: ANN001
    """``rfa compare --executor ray`` on the module's instance (2 CPUs: two groups per round) writes the
    results.csv of ``--executor processes`` (two workers: the same two groups) character for character,
    and that of the default (serial, all clients in one batched kernel) within the stated tolerance."""
    import json

    from rfa.cli import main as rfa_main

    sweep = TINY_SWEEP + ["--aggregators", "rfa", "--corruptions", "none", "--seeds", "1"]  # one run: 3 rounds x 3 calls
    got = {}
    for ex, extra in (("processes", ["--executor", "processes"]), ("ray", ["--executor", "ray"]), ("serial", ["--jobs", "1"])):
        assert rfa_main(["compare", *sweep, *extra, "--out", str(tmp_path / ex)]) == 0
        got[ex] = _results(tmp_path / ex)
        runs = json.loads((tmp_path / ex / "results.json").read_text())["runs"]
        assert [r["config"]["executor"] for r in runs] == [ex]  # each run's local training went through it
    assert len(got["ray"]) == 1
    assert got["ray"] == got["processes"]
    # Serial: the local models differ from the grouped ones only by float32 summation order inside each
    # step's batched gradient (the training test above bounds the weights by rtol 1e-4 after 6 steps).
    # A smooth function of the weights (the mean test loss, RFA's effective weights) moves by the same
    # relative order: rtol 1e-3 leaves a factor 10 for 3 rounds of propagation. An accuracy changes only
    # through test examples whose top two logits are that close: at most one of the test set per run.
    for s, r in zip(got["serial"], got["ray"]):
        assert {k: v for k, v in s.items() if k not in MODEL_COLUMNS} == {k: v for k, v in r.items() if k not in MODEL_COLUMNS}
        for k in ("test_loss", "max_effective_weight"):
            assert float(r[k]) == pytest.approx(float(s[k]), rel=1e-3), k
        assert abs(int(r["test_correct"]) - int(s["test_correct"])) <= 1
        assert float(r["accuracy"]) == pytest.approx(int(r["test_correct"]) / int(r["test_total"]))


def test_rfa_compare_executor_flags_are_checked_before_anything_is_written(tmp_path, capsys) -> None:  # noqa: ANN001
    from rfa.cli import main as rfa_main

    sweep = TINY_SWEEP + ["--aggregators", "fedavg", "--corruptions", "none", "--seeds", "1"]
    cases = {"--jobs": (["--executor", "ray", "--jobs", "2"], "--executor ray replaces --jobs"),
             "--ray-address": (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray")}
    for name, (flags, message) in cases.items():
        out = tmp_path / name.strip("-")
        assert rfa_main(["compare", *sweep, *flags, "--out", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert f"rfa compare: {message}" in err, err
        assert not out.exists()


SIGTERM_SWEEP = TINY_SWEEP + ["--rounds", "10", "--aggregators", "fedavg,coordinate-median", "--corruptions", "gaussian",
                              "--rhos", "0.25", "--seeds", "2"]  # 8 runs of about half a second each once Ray is up


def _ray_processes(tmp: str) -> dict[int, str]:
    out = {}
    for p in _processes_mentioning(tmp):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                out[p] = f.read().decode(errors="replace")
        except OSError:
            continue
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_under_ray_saves_what_finished_stops_the_cluster_and_resumes(tmp_path) -> None:  # noqa: ANN001
    """SIGTERM to ``rfa compare --executor ray`` after its first run is saved: exit 130, one line saying
    how many runs were saved and how to continue, the finished runs intact and nothing else written, no
    process of its Ray instance left; ``--resume`` then ends with the results of an uninterrupted sweep."""
    import json

    from rfa.cli import main as rfa_main

    tmp = f"/tmp/rs{os.getpid()}"  # short: Ray's socket paths must fit in 107 bytes
    env = dict(os.environ, RAY_TMPDIR=tmp, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "rfa.cli", "compare", *SIGTERM_SWEEP, "--executor", "ray", "--out", str(out)]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "records.jsonl"
    try:
        deadline = time.monotonic() + 240
        while not (records.exists() and records.read_text()) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        procs = _ray_processes(tmp)
        assert len([c for c in procs.values() if "raylet/raylet" in c]) == 1  # one cluster for the whole command
        spawned = []  # --executor ray replaces --jobs: no worker processes of a pool besides Ray's own
        for pid in _descendants(p.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    spawned += [pid] if b"multiprocessing" in f.read() else []
            except OSError:
                continue
        assert spawned == []
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stdout + stderr
    saved = [json.loads(line) for line in records.read_text().splitlines()]
    assert records.read_text().endswith("\n") and 1 <= len(saved) < 8
    said = [line for line in stderr.splitlines() if "interrupted" in line]
    assert said == [f"rfa compare: interrupted (SIGTERM): {len(saved)} of 8 runs saved in {out}; "
                    f"continue with: rfa compare --resume {out}"], stderr
    assert "Traceback" not in stderr
    assert len((out / "records.csv").read_text().splitlines()) == 1 + len(saved)
    assert not (out / "results.csv").exists()  # the sweep's outputs come only with its last run
    deadline = time.monotonic() + 30
    while _processes_mentioning(tmp) and time.monotonic() < deadline:
        time.sleep(0.5)  # raylet and workers exit once the GCS is gone
    assert _ray_processes(tmp) == {}
    # resume on the module's instance (the saved flags include --executor ray), and an uninterrupted sweep
    assert rfa_main(["compare", "--resume", str(out)]) == 0
    assert rfa_main(["compare", *SIGTERM_SWEEP, "--executor", "ray", "--out", str(tmp_path / "whole")]) == 0
    assert _results(out) == _results(tmp_path / "whole")
