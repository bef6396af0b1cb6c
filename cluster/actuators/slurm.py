"""The Slurm actuator: ``drain_node`` and ``migrate_job`` through ``scontrol`` and ``squeue`` (setting
``scheduler=slurm``), once for the whole cluster, from the gateway's host; ``cordon_gpu`` is refused.

Every change is tagged with the approval it carries out, ``opsloop:<approval id>``, so it can be traced back and a
retry is idempotent across restarts (not only by action id within one process):

* ``drain_node``: ``scontrol update NodeName=<node> State=DRAIN Reason="opsloop:<approval id> drain_node(...)"``,
  after reading the node (``scontrol show node -o``). A node this approval drained already is reported executed
  without a second update; a node drained by anyone else (another reason, another approval) is left as it is and
  the result says who drained it and why, never overwriting their reason. The node is read back after the update.
  Its undo, :meth:`SlurmActuator.resume_node` (``State=RESUME``), resumes only a drain of the same approval; the
  ``resume_node`` action (``drained_by``: the drain's approval) runs it.
* ``migrate_job``: the job (a Slurm job id, or a job name that names exactly one job in ``squeue``) is moved off
  the ``avoid`` nodes (a GPU stands for its node): a running job there is requeued held (``scontrol
  requeuehold``), excluded from them (``ExcNodeList``, its earlier exclusions kept) and released, so it cannot
  restart where it ran; a pending job is only excluded. ``AdminComment`` records ``opsloop:<approval id>`` when it
  is empty or opsloop's own (a site's comment is kept). A job already off those nodes is not touched, so a
  retry requeues nothing twice. A requeue has no undo: the job's restart is the migration.
* ``cordon_gpu``: refused. Slurm (22.05 and later) has no per-GPU drain; draining the GPU's whole node would carry
  out a larger action than the one approved (``drain_node``, high risk, instead of one GPU, medium), on
  targets nobody approved. :meth:`SlurmActuator.refusal` says so without running anything (a check that can
  come before approval).

Before anyone approves, :meth:`SlurmActuator.effect` states the exact commands it will run (or that it will run
none), after reading the node or job as the execution does.

Node names: opsloop names nodes as its telemetry does; ``slurm_nodes`` maps a name to Slurm's ``NodeName`` where
they differ (``{"DGX-01": "dgx01"}``), any other name is Slurm's as it is. The commands read ``slurm_conf``
(passed as ``SLURM_CONF``; unset: their own default) and come from ``slurm_bin_dir`` (unset: ``PATH``). Each
command has ``slurm_timeout_s``; a whole execution is bounded by :data:`~cluster.actuators.results.BUDGET_S`. A
command that fails is a ``failed`` result carrying the command's own message (its stderr). The gateway's user must be
allowed to change nodes and jobs (root, ``SlurmUser``, or an operator or administrator in Slurm's accounting);
Slurm's "Access/permission denied" is the result's detail otherwise.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from actors.gateway.effects import Effect, new_value
from cluster.actuators.results import BoundedActuator, action_result
from cluster.telemetry.samples import ActionResult
from policies.actions import NODE_PATTERN, Action, CordonGpu, DrainNode, MigrateJob, ResumeNode, describe

if TYPE_CHECKING:
    from cluster.settings import Settings

#: The action kinds a workload manager carries out (setting ``scheduler``).
SCHEDULER_KINDS = frozenset({"drain_node", "cordon_gpu", "migrate_job"})
#: The undo of a scheduler action, routed to the scheduler actuator too (``resume_node``: lift a drain of opsloop's).
UNDO_KINDS = frozenset({"resume_node"})
#: Bound of reading Slurm for an approval card's effect (under the gateway's 5 s).
EFFECT_S = 4.0
#: The tag of every change opsloop makes in Slurm, followed by the approval id.
TAG = "opsloop:"
#: Why ``cordon_gpu`` is refused (the detail of its failed result and of :meth:`SlurmActuator.refusal`).
NO_GPU_DRAIN = ("cordon_gpu is not supported by Slurm: it has no per-GPU drain, and draining the whole node would "
                "be a larger action than the one approved; propose drain_node {node} instead")

_GPU = re.compile(rf"^({NODE_PATTERN})/gpu[0-9]{{1,3}}$")
_NODE = re.compile(rf"^{NODE_PATTERN}$")
_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")
#: The job states a requeue moves; PENDING is only excluded; the rest are over.
_RUNNING = frozenset({"RUNNING", "SUSPENDED"})


class SlurmFailure(Exception):
    """A Slurm command failed or did not answer; the message says which and carries its own words."""


def tag(approval_id: str) -> str:
    """The mark of ``approval_id`` in a node's reason or a job's admin comment: ``opsloop:<approval id>``."""
    return TAG + approval_id


def _field(line: str, key: str) -> str:
    """The value of one ``Key=Value`` field of a ``scontrol show -o`` line that holds no spaces ("" when absent)."""
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", line)
    return m.group(1) if m else ""


def _last(line: str, key: str) -> str:
    """The value of the ``Key=Value`` field that ends the line, spaces and all ("" when absent)."""
    m = re.search(rf"(?:^|\s){re.escape(key)}=(.*)$", line)
    return m.group(1) if m else ""


def _null(value: str) -> str:
    return "" if value in ("(null)", "None") else value


@dataclass(frozen=True)
class NodeInfo:
    """A node as ``scontrol show node -o`` prints it: its state flags and the reason someone set, by whom."""

    name: str
    state: str  # IDLE+DRAIN, MIXED+DRAIN, DOWN, ...
    reason: str = ""
    reason_by: str = ""  # user@time

    @classmethod
    def parse(cls, line: str) -> NodeInfo:
        # The reason holds spaces; scontrol ends it with " [user@time]" (and prints it last, in 22.05 to 24.x).
        m = re.search(r"(?:^|\s)Reason=(.*?) \[([^\]\s]*@[^\]\s]*)\]", line)
        reason, by = (m.group(1), m.group(2)) if m else (_last(line, "Reason"), "")
        return cls(_field(line, "NodeName"), _field(line, "State"), _null(reason.strip()), by)

    @property
    def drained(self) -> bool:
        """Drained or draining (``DRAIN`` among the state's flags)."""
        return "DRAIN" in self.state.split("+")

    def tagged(self, approval_id: str) -> bool:
        """Whether the reason is ``approval_id``'s (its first word is the tag)."""
        return self.reason.split(maxsplit=1)[:1] == [tag(approval_id)]

    def why(self) -> str:
        """The reason and who set it, for a detail: ``'disk swap' (alice@2026-01-05T10:00:00)``."""
        by = f" ({self.reason_by})" if self.reason_by else ""
        return f"reason {self.reason!r}{by}" if self.reason else "no reason given"


@dataclass(frozen=True)
class JobInfo:
    """A job as ``scontrol show job -o`` prints it (the fields the migration reads)."""

    job_id: str
    name: str
    state: str
    nodes: str  # compressed hostlist, "" while pending
    excluded: str  # compressed hostlist, "" for none
    restarts: int
    requeue: bool
    reason: str
    admin_comment: str

    @classmethod
    def parse(cls, line: str) -> JobInfo:
        m = re.search(r"(?:^|\s)AdminComment=(.*?)(?=\s[A-Za-z][A-Za-z/:_]*=|\s*$)", line)
        restarts = _field(line, "Restarts")
        return cls(_field(line, "JobId"), _field(line, "JobName"), _field(line, "JobState"),
                   _null(_field(line, "NodeList")), _null(_field(line, "ExcNodeList")),
                   int(restarts) if restarts.isdigit() else 0, _field(line, "Requeue") != "0",
                   _field(line, "Reason"), _null(m.group(1).strip()) if m else "")

    def label(self) -> str:
        return f"job {self.job_id}" + (f" ({self.name})" if self.name and self.name != self.job_id else "")


class SlurmActuator(BoundedActuator):
    """``drain_node`` and ``migrate_job`` through Slurm's own commands (no shell: argument lists).

    Args:
        nodes: opsloop node name → Slurm ``NodeName``, where they differ (the rest are the same).
        bin_dir: Directory of ``scontrol`` and ``squeue`` (``None``: ``PATH``).
        conf: The ``slurm.conf`` the commands read (``SLURM_CONF``; ``None``: their default).
        timeout_s: Bound of one command.
    """

    answers = "Slurm"
    failure = (SlurmFailure,)

    def __init__(self, nodes: Mapping[str, str] | None = None, bin_dir: Path | str | None = None,
                 conf: Path | str | None = None, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.nodes = dict(nodes or {})
        self.bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.conf = Path(conf) if conf is not None else None
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SlurmActuator:
        """The ``slurm_*`` settings, checked: ``scontrol`` and ``squeue`` are there, ``slurm_conf`` is a file.

        Raises:
            ValueError: a command or the configuration file is missing (the message says where it looked).
        """
        act = cls(settings.slurm_nodes, settings.slurm_bin_dir, settings.slurm_conf, settings.slurm_timeout_s)
        for command in ("scontrol", "squeue"):
            if act.command(command) is None:
                where = f"in slurm_bin_dir {act.bin_dir}" if act.bin_dir else "on PATH (or set slurm_bin_dir)"
                raise ValueError(f"scheduler slurm needs {command}: not found {where}; install slurm-client")
        if act.conf is not None and not act.conf.is_file():
            raise ValueError(f"scheduler slurm: slurm_conf {act.conf} is not a file")
        return act

    def command(self, name: str) -> str | None:
        """The path of Slurm command ``name`` (``None``: not found)."""
        if self.bin_dir is None:
            return shutil.which(name)
        path = self.bin_dir / name
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None

    def slurm_node(self, node: str) -> str:
        """Slurm's ``NodeName`` of opsloop's node ``node`` (``slurm_nodes``, else the same name)."""
        return self.nodes.get(node, node)

    # --- the Actuator protocol -------------------------------------------------------------------------------
    def refusal(self, action: Action) -> str | None:
        """Why this actuator cannot carry ``action`` out, known without running anything (``None``: it can try)."""
        if isinstance(action, CordonGpu):
            return NO_GPU_DRAIN.format(node=action.gpu.split("/", 1)[0])
        if action.kind not in SCHEDULER_KINDS | UNDO_KINDS:
            return (f"{action.kind} is not a scheduler action: the Slurm actuator carries out "
                    f"{', '.join(sorted(SCHEDULER_KINDS - {'cordon_gpu'} | UNDO_KINDS))}")
        return None

    async def undo(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """Undo what ``approval_id`` did: a drain is resumed (:meth:`resume_node`); a requeue cannot be undone."""
        if isinstance(action, DrainNode):
            ok, detail = await self.bounded(self.resume_node(action.node, approval_id))
        elif isinstance(action, MigrateJob):
            ok, detail = False, f"{describe(action)} cannot be undone: the job's restart elsewhere is the migration"
        else:
            ok, detail = False, self.refusal(action) or f"{action.kind} has no undo in Slurm"
        return action_result(action, action_id, approval_id, "executed" if ok else "failed", detail, traceparent)

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str]:
        if isinstance(action, DrainNode):
            return await self.drain_node(action.node, approval_id, describe(action))
        if isinstance(action, ResumeNode):
            return await self.resume_node(action.node, action.drained_by)
        assert isinstance(action, MigrateJob)  # refusal() let only these three through
        return await self.requeue_job(action.job, action.avoid, approval_id)

    # --- nodes ---------------------------------------------------------------------------------------------
    def _named(self, node: str) -> str:
        name = self.slurm_node(node)
        return name if name == node else f"{name} (opsloop's {node})"

    async def show_node(self, node: str) -> NodeInfo:
        """``scontrol show node -o`` of opsloop's node ``node``.

        Raises:
            SlurmFailure: Slurm knows no such node, or did not answer.
        """
        name = self.slurm_node(node)
        out = await self._run("scontrol", "show", "node", "-o", name, what=f"node {self._named(node)}")
        lines = [ln for ln in out.splitlines() if _field(ln, "NodeName") == name]
        if not lines:
            raise SlurmFailure(f"scontrol show node {name}: no such node in its answer")
        return NodeInfo.parse(lines[0])

    async def drain_node(self, node: str, approval_id: str, why: str = "drain_node") -> tuple[bool, str]:
        """Drain ``node`` with reason ``opsloop:<approval_id> <why>``; ``(ok, detail)``.

        Already drained by this approval: ok, nothing done. Drained by anyone else: ok, left as it is (the detail
        names their reason). Otherwise the update is made and read back.
        """
        name, shown = self.slurm_node(node), self._named(node)
        before = await self.show_node(node)
        if before.drained and before.tagged(approval_id):
            return True, f"{shown} already {before.state} by this approval ({before.why()}): not drained again"
        if before.drained:
            return True, (f"{shown} was already {before.state}, drained by someone else ({before.why()}): left as "
                          "it is, their reason not overwritten")
        reason = f"{tag(approval_id)} {why}"
        await self._run("scontrol", "update", f"NodeName={name}", "State=DRAIN", f"Reason={reason}",
                        what=f"drain {shown}")
        after = await self.show_node(node)
        if not (after.drained and after.tagged(approval_id)):
            return False, (f"{shown}: scontrol accepted the drain but the node reads back {after.state} with "
                           f"{after.why()}")
        jobs = await self._jobs_on(name)
        running = f"; {len(jobs)} job(s) still run there until they end ({', '.join(jobs[:10])})" if jobs else ""
        was = f" ({before.why()})" if before.reason else ""
        return True, f"{shown} {before.state}{was} → {after.state}, reason {reason!r}{running}"

    async def resume_node(self, node: str, approval_id: str) -> tuple[bool, str]:
        """Undo :meth:`drain_node`: ``State=RESUME``, only for a drain of ``approval_id``; ``(ok, detail)``."""
        name, shown = self.slurm_node(node), self._named(node)
        before = await self.show_node(node)
        if not before.drained:
            return True, f"{shown} is {before.state}, not drained: nothing to resume"
        if not before.tagged(approval_id):
            return False, (f"{shown} is {before.state} but not by {tag(approval_id)} ({before.why()}): "
                           "not resumed, that drain is someone else's")
        await self._run("scontrol", "update", f"NodeName={name}", "State=RESUME", what=f"resume {shown}")
        after = await self.show_node(node)
        if after.drained:
            return False, f"{shown}: scontrol accepted the resume but the node reads back {after.state}"
        return True, f"{shown} {before.state} → {after.state} (resumed the drain of {tag(approval_id)})"

    async def _jobs_on(self, name: str) -> list[str]:
        out = await self._run("squeue", "--noheader", f"--nodelist={name}", "--format=%i", what=f"jobs on {name}")
        return out.split()

    # --- jobs ----------------------------------------------------------------------------------------------
    async def find_job(self, job: str) -> JobInfo:
        """The job opsloop calls ``job``: a Slurm job id (``123``, ``123_4``), else the one job of that name.

        Raises:
            SlurmFailure: no such job, several of that name, or Slurm did not answer.
        """
        job_id = job
        if not _JOB_ID.match(job):
            out = await self._run("squeue", "--noheader", f"--name={job}", "--format=%i", what=f"jobs named {job}")
            ids = out.split()
            if not ids:
                raise SlurmFailure(f"no job named {job} in Slurm's queue (squeue --name={job})")
            if len(ids) > 1:
                raise SlurmFailure(f"{len(ids)} jobs are named {job} ({', '.join(ids[:10])}): name one by its id")
            job_id = ids[0]
        out = await self._run("scontrol", "show", "job", "-o", job_id, what=f"job {job}")
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if len(lines) != 1:
            raise SlurmFailure(f"job {job_id} is {len(lines)} jobs (an array or heterogeneous job): name one of them")
        return JobInfo.parse(lines[0])

    async def hostnames(self, hostlist: str) -> list[str]:
        """A Slurm hostlist (``n[01-03],gpu7``) as node names."""
        if not hostlist:
            return []
        if "[" not in hostlist:
            return hostlist.split(",")
        return (await self._run("scontrol", "show", "hostnames", hostlist, what=f"hostlist {hostlist}")).split()

    def _avoided(self, avoid: Sequence[str]) -> list[str]:
        nodes: list[str] = []
        for entry in avoid:
            gpu = _GPU.match(entry)
            if gpu is None and not _NODE.match(entry):
                raise SlurmFailure(f"avoid: {entry!r} is neither a node nor a GPU (<node>/gpu<index>)")
            name = self.slurm_node(gpu.group(1) if gpu else entry)
            nodes += [] if name in nodes else [name]
        return nodes

    async def requeue_job(self, job: str, avoid: Sequence[str], approval_id: str) -> tuple[bool, str]:
        """Move ``job`` off the ``avoid`` nodes (or GPUs' nodes); ``(ok, detail)``. See the module's docstring.

        The order makes a retry after a crash finish the work: the admin comment is tagged first, then the job is
        requeued held, excluded and released; a job found held by its requeue with this approval's tag is
        excluded and released, one running off the avoided nodes is left alone.
        """
        nodes = self._avoided(avoid)
        off = ",".join(nodes)
        await self._run("scontrol", "show", "node", "-o", off, what=f"avoided nodes {off}")
        info = await self.find_job(job)
        label, mark, jid = info.label(), tag(approval_id), info.job_id
        excluded = await self.hostnames(info.excluded)
        exclude = f"ExcNodeList={','.join(excluded + [n for n in nodes if n not in excluded])}"
        ours = not info.admin_comment or info.admin_comment.startswith(TAG)  # a site's comment is kept
        comment = [f"AdminComment={mark} migrate_job off {off}"] if ours else []
        kept = "" if ours else f"; its AdminComment kept as the site set it ({info.admin_comment!r})"
        # A job this approval requeued is PENDING, or still COMPLETING on its node for a moment.
        if info.state == "PENDING" or (info.state == "COMPLETING" and info.admin_comment.startswith(mark)):
            held = info.reason == "job_requeued_in_held_state" and info.admin_comment.startswith(mark)
            if not set(nodes) <= set(excluded):
                await self._run("scontrol", "update", f"JobId={jid}", exclude, *comment, what=f"exclude {label}")
            if held:  # an earlier try of this approval requeued it held and stopped there
                await self._run("scontrol", "release", jid, what=f"release {label}")
                return True, f"{label} requeued by this approval, now excluded from {off} and released{kept}"
            done = "already excluded from" if set(nodes) <= set(excluded) else "excluded from"
            return True, f"{label} is {info.state.lower()}, {done} {off}: it will not start there{kept}"
        if info.state not in _RUNNING:
            return False, f"{label} is {info.state}: there is nothing to move"
        ran_on = await self.hostnames(info.nodes)
        hit = [n for n in ran_on if n in nodes]
        if not hit:
            return True, f"{label} runs on {info.nodes}, none of the avoided nodes ({off}): not requeued"
        if comment:
            await self._run("scontrol", "update", f"JobId={jid}", *comment, what=f"tag {label}")
        try:
            await self._run("scontrol", "requeuehold", jid, what=f"requeue {label}")
        except SlurmFailure:
            if comment:  # put back the comment it had (empty, or an earlier approval's)
                await self._run("scontrol", "update", f"JobId={jid}", f"AdminComment={info.admin_comment}",
                                what=f"untag {label}")
            raise
        try:  # held: it cannot start again before it is excluded from the avoided nodes
            await self._run("scontrol", "update", f"JobId={jid}", exclude, what=f"exclude {label}")
        except SlurmFailure as exc:
            await self._run("scontrol", "release", jid, what=f"release {label}")
            return False, f"{label} was requeued but not excluded from {off}, and released: {exc}"
        await self._run("scontrol", "release", jid, what=f"release {label}")
        after = await self.find_job(jid)
        if not set(nodes) <= set(await self.hostnames(after.excluded)) or after.restarts <= info.restarts:
            return False, (f"{label}: requeued but reads back {after.state}, restarts {after.restarts}, "
                           f"ExcNodeList={after.excluded or '(none)'}")
        return True, (f"{label} requeued off {','.join(hit)}: {info.state} on {info.nodes} → {after.state}, "
                      f"ExcNodeList={after.excluded} (restarts {info.restarts} → {after.restarts}){kept}")

    # --- running the commands ------------------------------------------------------------------------------
    async def _run(self, command: str, *args: str, what: str) -> str:
        """Run Slurm command ``command`` with ``args``; its stdout.

        Raises:
            SlurmFailure: not found, no answer within ``timeout_s``, or a non-zero exit (with its stderr).
        """
        path = self.command(command)
        if path is None:
            where = f"in {self.bin_dir}" if self.bin_dir else "on PATH"
            raise SlurmFailure(f"{what}: {command} not found {where}")
        env = {**os.environ, "SLURM_CONF": str(self.conf)} if self.conf is not None else None
        proc = await asyncio.create_subprocess_exec(
            path, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SlurmFailure(f"{what}: {command} {args[0]} gave no answer within {self.timeout_s:g} s "
                               "(is slurmctld up?)") from None
        except asyncio.CancelledError:  # the whole execution's bound: leave no command behind
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            said = " ".join((err or out).decode(errors="replace").split()) or f"exit status {proc.returncode}"
            raise SlurmFailure(f"{what}: {command} {' '.join(args[:2])} failed: {said}")
        return out.decode(errors="replace")

    # --- what approving will run (the approval card) -----------------------------------------------------------
    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The commands :meth:`execute` will run for ``approval_id``, after reading the node or job as it does (within
        :data:`EFFECT_S`: a Slurm that does not answer makes the state unknown, with why). What it will leave alone
        or refuse runs nothing, and the effect says so."""
        where = f"slurmctld of {self.conf} (SLURM_CONF)" if self.conf else "slurmctld of Slurm's default configuration"
        if (refused := self.refusal(action)) is not None:
            return Effect(call=f"nothing: {refused}", where=where, current="n/a", new="unchanged")
        if isinstance(action, DrainNode):
            call = self._cmd("scontrol", "update", f"NodeName={self.slurm_node(action.node)}", "State=DRAIN",
                             f"Reason={tag(approval_id)} {describe(action)}")
        elif isinstance(action, ResumeNode):
            call = self._cmd("scontrol", "update", f"NodeName={self.slurm_node(action.node)}", "State=RESUME")
        else:
            call = f"scontrol requeuehold, update ExcNodeList and release of job {action.job}"  # type: ignore[union-attr]
        try:
            return await asyncio.wait_for(self._effect(action, approval_id, call, where), EFFECT_S)
        except TimeoutError:
            why = f"Slurm gave no complete answer within {EFFECT_S:g} s"
        except SlurmFailure as exc:
            why = str(exc)
        return Effect(call=call, where=where, current=f"unknown ({why})", new=new_value(action))

    def _cmd(self, command: str, *args: str) -> str:
        return shlex.join([self.command(command) or command, *args])

    async def _effect(self, action: Action, approval_id: str, call: str, where: str) -> Effect:
        if isinstance(action, DrainNode):
            before, shown = await self.show_node(action.node), self._named(action.node)
            now = f"{shown} {before.state}" + (f", {before.why()}" if before.reason else "")
            if before.drained:
                whose = "this approval" if before.tagged(approval_id) else "someone else: their reason is kept"
                return Effect(call=f"nothing: {shown} is drained already, by {whose}", where=where, current=now,
                              new="unchanged")
            return Effect(call=call, where=where, current=now,
                          new=f"{shown} drained (State=DRAIN): no new jobs start there, running ones finish")
        if isinstance(action, ResumeNode):
            before, shown = await self.show_node(action.node), self._named(action.node)
            now = f"{shown} {before.state}" + (f", {before.why()}" if before.reason else "")
            if not before.drained:
                return Effect(call=f"nothing: {shown} is not drained", where=where, current=now, new="unchanged")
            if not before.tagged(action.drained_by):
                return Effect(call=f"nothing: {shown} is drained by someone else, not {tag(action.drained_by)} (it "
                              "will fail, their drain is kept)", where=where, current=now, new="unchanged")
            return Effect(call=call, where=where, current=now, new=f"{shown} resumed (State=RESUME): jobs start there")
        assert isinstance(action, MigrateJob)  # refusal() let only these three through
        nodes = self._avoided(action.avoid)
        off, mark = ",".join(nodes), tag(approval_id)
        info = await self.find_job(action.job)
        label, jid = info.label(), info.job_id
        excluded = await self.hostnames(info.excluded)
        exclude = f"ExcNodeList={','.join(excluded + [n for n in nodes if n not in excluded])}"
        comment = ([f"AdminComment={mark} migrate_job off {off}"]
                   if not info.admin_comment or info.admin_comment.startswith(TAG) else [])
        now = f"{label} {info.state}" + (f" on {info.nodes}" if info.nodes else "") + \
            f", ExcNodeList={info.excluded or '(none)'}"
        if info.state == "PENDING":
            if set(nodes) <= set(excluded):
                return Effect(call=f"nothing: {label} is excluded from {off} already", where=where, current=now,
                              new="unchanged")
            return Effect(call=self._cmd("scontrol", "update", f"JobId={jid}", exclude, *comment), where=where,
                          current=now, new=f"{label} pending, {exclude}: it will not start on {off}")
        if info.state not in _RUNNING:
            return Effect(call=f"nothing: {label} is {info.state}, there is nothing to move (it will fail)",
                          where=where, current=now, new="unchanged")
        hit = [n for n in await self.hostnames(info.nodes) if n in nodes]
        if not hit:
            return Effect(call=f"nothing: {label} runs on none of {off}", where=where, current=now, new="unchanged")
        calls = ([self._cmd("scontrol", "update", f"JobId={jid}", *comment)] if comment else []) + [
            self._cmd("scontrol", "requeuehold", jid), self._cmd("scontrol", "update", f"JobId={jid}", exclude),
            self._cmd("scontrol", "release", jid)]
        return Effect(call="; ".join(calls), where=where, current=now,
                      new=f"{label} requeued off {','.join(hit)} with {exclude}: it restarts elsewhere")
