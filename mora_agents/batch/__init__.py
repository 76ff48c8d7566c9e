"""Many requests as normal runs, resumable: one after another in this process, or on a Ray cluster.

    from mora_agents.batch import BatchRequest, run_batch
    from mora_agents.runs.runner import RunOptions

    results = run_batch([BatchRequest("a red fox", seed=1), BatchRequest("a lighthouse", duration=8)],
                        RunOptions(preset="tiny", out=Path("runs/batch")))
"""

from mora_agents.batch.engine import check_requests, run_batch, write_summary
from mora_agents.batch.jobs import BatchResult
from mora_agents.batch.requests import BatchRequest, read_requests

__all__ = ["BatchRequest", "BatchResult", "check_requests", "read_requests", "run_batch", "write_summary"]
