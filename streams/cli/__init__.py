"""``bge`` and its commands (:mod:`~streams.cli.main`): the operator's tools — replay and explain,
dead letters, validate, rebuild, demo — with the topic reading and selection they share and the
console output helpers.

May import anything of the runtime; nothing of the runtime imports it.
"""
