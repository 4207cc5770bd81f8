"""The retrain job in a child process, so the long-running retrainer's memory stays flat.

A job's peak (the replayed training window, scikit-learn's fit, the skl2onnx conversion, the
onnxruntime session that scores production on the holdout) is memory that glibc's allocator keeps
in a long-running process after the job ends: run in a thread, every job left the retrainer
bigger (a step at each job in ``benchmarks/soak.py``). So `run_in_child` runs `retrain_job` in a
fresh interpreter (``python -m driftline.retrain_process MODEL REASON``) that exits when it is
done: its memory goes back to the system, and a job that crashes (an exception, the OOM killer, a
segfault in a native library) is a ``retrain_failed`` step, never the retrainer's death.

Only plain data crosses the process boundary: the settings as JSON on the child's stdin, the model
name and the reason as arguments, and the job's JSON result as one marked line on its stdout. The
candidate itself travels as it always did, as ONNX bytes through the registry. The child's log
lines go to the retrainer's stderr. A child whose retrainer is gone (killed) stops at once: it
would otherwise register a candidate for a retrainer that no longer waits for it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import orjson

from driftline.settings import Settings

RESULT_MARK = b"driftline-retrain-result "  # the line of the child's stdout that holds its result


class RetrainJobError(RuntimeError):
    """The job failed in its child process: its exception, or how the process ended."""


def run_in_child(s: Settings, model: str, reason: str, timeout: float | None = None) -> dict[str, Any]:
    """`driftline.loop.retrain_job` for `model` in a child process; its JSON result.

    Raises `RetrainJobError` when the job raised (its exception's type and message), the child
    died (its exit status or signal) or outlived `timeout` seconds (it is then killed).
    """
    cmd = [sys.executable, "-m", "driftline.retrain_process", model, reason]
    try:
        done = subprocess.run(cmd, input=s.child_json(), stdout=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RetrainJobError(f"the retrain job of {model} ran over {timeout:g} s and was killed") from None
    marked = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    reply: dict[str, Any] = orjson.loads(marked[-1][len(RESULT_MARK) :]) if marked else {}
    if done.returncode == 0 and "result" in reply:
        result: dict[str, Any] = reply["result"]
        return result
    if "error" in reply:
        raise RetrainJobError(reply["error"])
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"status {done.returncode}"
    raise RetrainJobError(f"the retrain job's process ended with {how} and no result")


def _exit_with_parent(poll_seconds: float = 1.0) -> None:
    """Stop this process once its parent (the retrainer) is gone (we are then re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """The child: settings JSON on stdin, MODEL and REASON as arguments; the result on stdout."""
    model, reason = argv if argv is not None else sys.argv[1:]
    _exit_with_parent()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from driftline.loop import retrain_job  # after the watch: the imports take seconds

    try:
        s = Settings.model_validate_json(sys.stdin.buffer.read())
        reply: dict[str, Any] = {"result": retrain_job(s, model, reason)}
        status = 0
    except Exception as exc:  # reported to the retrainer as the job's failure, with its cause
        logging.getLogger("driftline.retrain").exception("retrain of %s failed", model)
        reply, status = {"error": f"{type(exc).__name__}: {exc}"}, 1
    sys.stdout.buffer.write(RESULT_MARK + orjson.dumps(reply) + b"\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
