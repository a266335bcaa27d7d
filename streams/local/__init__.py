"""Stand-ins for services that cannot be reached here, speaking their real wire protocols: a
Jetstream server (:mod:`~streams.local.jetstream_server`), a generator of lexicon-conformant event
corpora (:mod:`~streams.local.corpus`) and an AppView (:mod:`~streams.local.appview`).

Imported only by the tests, the bench, ``bge demo`` and ``bge jetstream-serve``; never by the runtime.
"""
