"""Running one DAG of a spec in this process with Airflow's ``dag.test()``: ``mlops run``, ``make demo``.

* :mod:`~mlops_provider.inprocess.airflow` — the Airflow side: the metadata DB, storing the DAG, the
  failure listener, XCom, the process's output, and each task's log where the Airflow UI reads it;
* :mod:`~mlops_provider.inprocess.result` — :class:`~mlops_provider.inprocess.result.RunResult`, what the
  run did (states, verdict, model version, alias, scored rows) and its one-screen summary.

:mod:`mlops_provider.run` puts them together.
"""
