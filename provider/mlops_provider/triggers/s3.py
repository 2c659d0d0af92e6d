"""Wait, in the triggerer, for an S3 object to exist.

Airflow's own ``S3KeyTrigger`` needs ``aiobotocore``, whose botocore pin conflicts with the boto3 the
Amazon provider installs; this trigger runs the synchronous S3Hook check in a worker thread instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class S3ObjectTrigger(BaseTrigger):
    """Fire once ``uri`` (``s3://bucket/key``) exists.

    :param uri: the object to wait for.
    :param aws_conn_id: Airflow connection of type aws (extra ``endpoint_url`` for S3-compatible stores).
    :param poke_interval: seconds between checks.
    """

    def __init__(self, uri: str, aws_conn_id: str | None = None, poke_interval: float = 60.0) -> None:
        super().__init__()
        self.uri = uri
        self.aws_conn_id = aws_conn_id
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "mlops_provider.triggers.s3.S3ObjectTrigger",
            {"uri": self.uri, "aws_conn_id": self.aws_conn_id, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlops_provider.storage import workspace

        while True:
            try:
                found = await asyncio.to_thread(workspace.exists, self.uri, self.aws_conn_id)
            except Exception as exc:  # a transient S3 error is logged; the deadline still applies
                self.log.warning("Checking %s failed: %s", self.uri, exc)
                found = False
            if found:
                self.log.info("Found %s", self.uri)
                yield TriggerEvent({"status": "success", "uri": self.uri})
                return
            await asyncio.sleep(self.poke_interval)
