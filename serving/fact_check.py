"""The model's words checked against the fleet's facts (issue #19), and the part of the answer they become.

The model's text is read sentence by sentence for what the facts (:class:`serving.facts.FleetFacts`) can refute:

- an approval id (``ap-…``) the gateway does not list, or an incident id (``inc-…``) the agent and the approvals
  do not name;
- an action kind given for an approval (named by id, or "the pending approval" when one alone is pending) that is
  not its action's kind;
- a GPU (``node/gpuN``) the twin does not have;
- a temperature said of a GPU, node or cooling unit (the nearest one named before it in the sentence, else after
  it) more than :data:`TOLERANCE_C` from every temperature the facts give for it; after "above" / "below" the
  current readings must meet the bound; a target ("set … to 18 °C", "a limit of …") is not a claim;
- a GPU or node called the hottest when it is more than :data:`TOLERANCE_C` cooler than the hottest sensor.

A source that did not answer is not checked against. Words that name none of the things the answer's facts name
(no node, GPU, unit, approval, incident, runbook step or action kind: a small model's ramble) and words that recite
the model's instructions are withheld too. One refuted claim withholds the whole model text: the answer says so and
why, and the facts block that leads it stands. Streams buffer the model's text for this (the
facts go out first, the checked words once the model is done), so a refuted sentence is never sent.
"""

from __future__ import annotations

import re

from policies.actions import ACTION_KINDS
from serving.facts import APPROVAL_ID, INCIDENT_ID, FleetFacts, mentions

TOLERANCE_C = 2.0
LABEL = "In the model's words (checked against the facts above):"
WITHHELD = "The model's answer was withheld: {why}. The facts above stand."
#: What names a thing of the fleet or the runbooks in the facts: a node or GPU (``n01``, ``n01/gpu3``), a cooling unit
#: (``cu01``), an approval or incident id, a runbook step's tag or an action kind.
_SUBJECT = re.compile(r"\b[a-z]{1,4}\d+(?:/gpu\d+)?\b|\b(?:ap|inc)-[0-9a-f]{6,}\b|\[[a-z]+-[\w.-]+(?:#[\w.-]+)?\]|"
                      r"\b[a-z]+_[a-z_]+\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_TEMP = re.compile(r"(?<![\w./=-])(-?\d{1,3}(?:\.\d+)?)\s*(?:°\s*C?|º\s*C?|degrees?(?:\s+(?:C|Celsius)\b)?|"
                   r"deg\b\.?\s*C?|C\b)", re.I)
_ABOVE = re.compile(r"\b(above|over|exceed\w*|more than|greater than|higher than|hotter than)\s*$|[>≥]=?\s*$", re.I)
_BELOW = re.compile(r"\b(below|under|less than|lower than|cooler than)\s*$|[<≤]=?\s*$", re.I)
_TARGET = re.compile(r"\b(threshold|limit|setpoint|target|max\w*|slowdown|shutdown|operating|throttl\w*|at most|"
                     r"at least)(\s+temperature)?\W*(of|at|is)?\s*$|"
                     r"\b(set|raise|lower|reduce|increase|decrease|change|adjust|cap|bring|keep|stay|remain|get|should|must|needs?)\b.{0,40}\b(to|below|under|above|over)\s*$",
                     re.I)
#: After a number, the words that make it a difference ("6.5 °C below its limit"), not a reading.
_DIFFERENCE = re.compile(r"^\s*(above|below|under|over|short of|away from|from|higher|lower|warmer|cooler|hotter|"
                         r"colder|more|less|of (head)?room|of margin)\b", re.I)
_HOTTEST = re.compile(r"\b(hottest|warmest)\b", re.I)
_APPROVAL_WORD = re.compile(r"\b(approv\w*|pending)\b", re.I)
_KINDS = [k for k in ACTION_KINDS if "_" in k]  # one-word kinds ("notify") are everyday words too


def _temperature(value: float, prefix: str, before: str, kind: str, name: str, fleet: FleetFacts) -> str | None:
    """Why ``value`` said of ``name`` contradicts the facts, or ``None``.

    ``prefix`` is the sentence up to the value (a target is no claim), ``before`` the words since its subject.
    """
    if _TARGET.search(prefix[-80:]):
        return None
    if kind == "unit":
        allowed = list(next(u.temperatures for u in fleet.units if u.name == name))
        now = allowed
    else:
        gpus = [fleet.gpu(name)] if kind == "gpu" else fleet.node_gpus(name)
        now = [t for g in gpus if g for t in g.readings()]
        allowed = [t for g in gpus if g for t in g.temperatures()]
    if not allowed:
        return None
    sensed = (f"{g.sensed_c} °C sensed" if (g := fleet.gpu(name)) and g.sensed_c is not None else
              "; ".join(f"{t:g} °C" for t in allowed[:4]))
    if _ABOVE.search(before):
        ok = bool(now) and max(now) > value - TOLERANCE_C
        return None if ok else f"it said {name} was above {value:g} °C; the twin says {sensed}"
    if _BELOW.search(before):
        ok = bool(now) and min(now) < value + TOLERANCE_C
        return None if ok else f"it said {name} was below {value:g} °C; the twin says {sensed}"
    if any(abs(value - t) <= TOLERANCE_C for t in allowed):
        return None
    return f"it gave {name} as {value:g} °C; the twin says {sensed}"


def _temperatures(sentence: str, fleet: FleetFacts, named: list[tuple[int, str, str]]) -> list[str]:
    out = []
    known = [m for m in named if m[1] != "gpu" or fleet.gpu(m[2])]
    for t in _TEMP.finditer(sentence):
        if _DIFFERENCE.match(sentence[t.end():t.end() + 20]):
            continue
        before = [m for m in known if m[0] < t.start()]
        after = [m for m in known if m[0] > t.end()]
        subject = before[-1] if before else (after[0] if after else None)
        if subject is None:
            continue
        start = subject[0] + len(subject[2]) if before else 0
        context = sentence[max(start, t.start() - 60):t.start()]
        why = _temperature(float(t.group(1)), sentence[:t.start()], context, subject[1], subject[2], fleet)
        if why:
            out.append(why)
    return out


def _hottest(sentence: str, fleet: FleetFacts, named: list[tuple[int, str, str]]) -> list[str]:
    ranked = fleet.hottest()
    said = [(kind, name) for _, kind, name in named if kind in ("gpu", "node")]
    if not _HOTTEST.search(sentence) or not ranked or not said:
        return []
    top = ranked[0].sensed_c or 0.0
    hot = [g for g in ranked if (g.sensed_c or 0.0) >= top - TOLERANCE_C]
    hot_names = {g.name.lower() for g in hot} | {g.node.lower() for g in hot}
    if any(name.lower() in hot_names for _, name in said):
        return []
    names = ", ".join(dict.fromkeys(name for _, name in said))
    return [f"it called {names} the hottest; the twin's hottest is {ranked[0].name} on {ranked[0].node} at "
            f"{ranked[0].sensed_c} °C sensed"]


def _approvals(sentence: str, fleet: FleetFacts) -> list[str]:
    if fleet.approvals is None:
        return []
    out, ids = [], list(dict.fromkeys(m.group(0).lower() for m in APPROVAL_ID.finditer(sentence)))
    found = [a for a in (fleet.approval(i) for i in ids) if a]
    out += [f"it named approval {i}, which the gateway does not have" for i in ids if not fleet.approval(i)]
    low = sentence.lower()
    kinds = [k for k in _KINDS if k in low or k.replace("_", " ") in low]
    pending = fleet.pending()
    target = found[0] if len(ids) == 1 and found else None
    if target is None and not ids and len(pending) == 1 and _APPROVAL_WORD.search(sentence):
        target = pending[0]
    if kinds and target is not None and target.kind not in kinds:
        out.append(f"it gave the action of {target.approval_id} as {', '.join(kinds)}; the gateway says "
                   f"{target.action}")
    return out


def check(text: str, fleet: FleetFacts) -> list[str]:
    """What in ``text`` the facts refute, one reason each (empty: nothing refuted)."""
    if not isinstance(text, str):
        raise TypeError(f"the model's text must be a string, not {type(text).__name__}")
    out: list[str] = []
    for sentence in _SENTENCE.split(text):
        named = mentions(sentence, fleet)
        if fleet.gpus is not None:
            out += [f"it named {name}, which the twin does not have" for _, kind, name in named
                    if kind == "gpu" and not fleet.gpu(name)]
            out += _temperatures(sentence, fleet, named) + _hottest(sentence, fleet, named)
        out += _approvals(sentence, fleet)
        if fleet.incidents is not None:
            known = fleet.incident_ids()
            out += [f"it named incident {m.group(0)}, which is not open and no approval names"
                    for m in INCIDENT_ID.finditer(sentence) if m.group(0).lower() not in known]
    return list(dict.fromkeys(out))


#: Words in a row that, found in the model's answer and in its instructions, make the answer a recital of them.
ECHO_WORDS = 8


def echoes(text: str, instructions: str, n: int = ECHO_WORDS) -> bool:
    """Whether ``text`` repeats ``n`` words in a row of ``instructions`` (a small model that recites its prompt
    contradicts no fact, and says nothing: its recital would show the operator our instructions as its answer)."""
    def grams(s: str) -> set[tuple[str, ...]]:
        w = re.findall(r"[a-z0-9]+", s.lower())
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}

    return bool(grams(text) & grams(instructions))


def subjects(text: str) -> set[str]:
    """The names of fleet objects, ids, runbook steps and action kinds in ``text`` (lower case)."""
    return {m.lower() for m in _SUBJECT.findall(text)}


def off_subject(text: str, facts: str) -> bool:
    """Whether ``text`` names nothing that ``facts`` names: words about no node, GPU, unit, approval, incident,
    runbook step or action of the answer are no explanation of it (a small model may ramble on, contradicting no
    fact). Facts that name nothing leave nothing to be about: then no text is off the subject."""
    named = subjects(facts)
    return bool(named) and not (subjects(text) & named)


def model_part(text: str, fleet: FleetFacts, instructions: str = "", facts: str = "") -> tuple[str, list[str]]:
    """The model's section of the answer (labelled, or withheld with the reasons) and the reasons.

    ``instructions``: the prompt the model was given; an answer that recites it is withheld too. ``facts``: the
    facts the answer opens with; an answer that names none of the things they name is withheld too."""
    words = text.strip()
    if not words:
        return "", []
    why = [f"it contradicted the facts ({w})" for w in check(words, fleet)]
    if instructions and echoes(words, instructions):
        why.append("it repeated its instructions instead of answering")
    if facts and off_subject(words, facts):
        why.append("it named nothing the facts name (no node, GPU, unit, approval, incident or runbook step)")
    if why:
        return "\n\n" + WITHHELD.format(why="; ".join(why)), why
    return f"\n\n{LABEL}\n{words}", []
