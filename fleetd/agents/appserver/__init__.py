"""Codex through `codex app-server` (codex.mode = "app-server"): JSON-RPC over its stdio.

    protocol.py  the msgspec types of the messages fleetd reads and sends, generated from the
                 pinned binary's schema by generate.py (never edited by hand)
    session.py   the conversation, socket-free: codex's lines in, fleetd's lines out
    summary.py   a run's lines folded into its result (exact tokens, turns, failures)

The Codex adapter (`fleetd.agents.codex`) picks this mode; the worker writes what the session
returns to the agent's stdin (`fleetd.worker.agent_input`).
"""
