"""Where pipeline data lives and how it is read and written: no stage logic here.

* :mod:`~mlops_provider.storage.workspace` — the run-scoped workspace (local folder or ``s3://`` prefix)
  where ingest puts the snapshot and the splits; paths under the project root; S3 through Airflow's
  ``S3Hook`` (the connection's credentials), with errors that name the service.
* :mod:`~mlops_provider.storage.tables` — tables read and written in chunks: read-ahead and write-behind
  threads, a parquet sink, a local copy of an ``s3://`` input.
"""
