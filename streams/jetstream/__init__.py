"""Jetstream wire support: the zstd codec of ``compress=true``, a local Jetstream-compatible
server for tests and demos, and a generator of lexicon-conformant event corpora.

- :mod:`streams.jetstream.codec` — compress/decompress one standalone zstd frame with the
  dictionary the real service uses.
- :mod:`streams.jetstream.server` — :class:`JetstreamServer`, replaying a JSONL corpus over the
  real v1 ``/subscribe`` wire, with faults on command.
- :mod:`streams.jetstream.corpus` — :func:`generate` realistic events deterministically.

Submodules are imported on demand so that importing the codec does not pull in the server.
"""
