"""Simulated users: a crowd that chats with a running server over its real API and votes
according to a pluggable preference, with noise, disagreement, and a share of careless
and adversarial users (`flywheel simulate`; `run_crowd` in-process).

* `preferences` — what users like: `module:function` scoring `(prompt, answer)`, with
  optional rewrite, flag and prompt helpers; the built-in `kindness`, `length`, `brevity`;
* `personas` — honest, careless (always A, always up, random) and adversarial users;
* `client` — one user's session: cookie, websocket turns, REST votes, waiting out 429/503;
* `crowd` — many users at once, and the report.
"""

from flywheel.simulate.crowd import CrowdReport, UserReport, crowd, run_crowd
from flywheel.simulate.personas import Persona, assign_personas
from flywheel.simulate.preferences import Preference, load_preference

__all__ = ["CrowdReport", "Persona", "Preference", "UserReport", "assign_personas", "crowd",
           "load_preference", "run_crowd"]
