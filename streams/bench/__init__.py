"""``bge bench``: throughput, latency, memory and a soak with faults, on the real local stack.

Every figure is printed next to a baseline measured in the same run, on the same machine, against
the same Kafka and Postgres, with the same generated corpus (``streams.local.corpus``):

- :mod:`streams.bench.throughput`: ingest, collect, project and replay (with their baselines:
  a bare websocket → aiokafka loop, a plain aiokafka consumer, the pipeline on Quix Streams, a
  bare ``COPY``);
- :mod:`streams.bench.pipeline`: end-to-end latency at a fixed rate, and peak RSS per process;
- :mod:`streams.bench.soak`: the whole pipeline under SIGKILLs, broker and database restarts,
  dropped connections and malformed events, ending with the database compared to a clean run's;
- :mod:`streams.bench.harness`: the corner of the stack each bench works in (its own topic
  prefix and Postgres schema, removed afterwards), processes, RSS sampling, Kafka counters;
- :mod:`streams.bench.cli`: the command line and the report (a table, and JSON).

Each bench uses its own topic prefix ``bench<run>.<bench>.`` and schema ``bench_<run>_<bench>``,
so it never touches a deployment's or a test's data, and only ever talks to 127.0.0.1.

Run ``bge bench --help``. Nothing is imported here, so the Quix Streams baseline
(``streams/bench/quix_pipeline.py``) can run from its own virtual environment.
"""
