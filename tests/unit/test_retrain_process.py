"""The retrain job's child process: how its failures reach the retrainer (no broker, no Redis)."""

from __future__ import annotations

import pytest

from driftline.retrain_process import RetrainJobError, run_in_child
from driftline.settings import Settings
from tests.private_stack import free_port


def _nothing_listens() -> Settings:
    port = free_port()
    return Settings(kafka_bootstrap=f"127.0.0.1:{port}", redis_url=f"redis://127.0.0.1:{port}/0")


def test_a_job_that_raises_is_a_job_error_with_its_cause() -> None:
    # Redis refuses the connection: the child's retrain_job raises, the child reports it and exits.
    with pytest.raises(RetrainJobError, match=r"^ConnectionError: .*127\.0\.0\.1"):
        run_in_child(_nothing_listens(), "fraud", "a test")


def test_a_job_over_its_time_is_killed_and_a_job_error() -> None:
    with pytest.raises(RetrainJobError, match=r"ran over 0\.5 s and was killed"):
        run_in_child(_nothing_listens(), "fraud", "a test", timeout=0.5)
