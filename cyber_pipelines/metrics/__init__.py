"""Business and health metrics of the pipeline: a Prometheus exporter and the same figures as a shell report.

- ``snapshot``: what one reading of the instance and the VSM log holds (plain data, no Dagster).
- ``reader``: the one module that reads the Dagster instance into a ``Snapshot`` (and the history of the
  backtest figures).
- ``exporter``: the metric families of a snapshot (names ``cyber_*``, each with its help text), a
  prometheus-client collector that reads afresh on every scrape, and the HTTP server.
- ``summary``: run and check success rates, data age, the VSM's pairs and each strategy's out-of-sample
  figures over time, as one JSON-ready mapping and as lines for the shell.

``cyber-pipelines metrics --port P`` serves them; ``cyber-pipelines metrics --summary`` prints them.
"""
