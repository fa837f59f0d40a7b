"""A process-pool worker for the worker tests (importable by child processes)."""

from atasker import BackgroundQueueWorker


class SquareWorker(BackgroundQueueWorker):
    """``run`` is static: it runs in the process pool; results come back here."""

    results: list = []

    @staticmethod
    def run(item, **kwargs):
        import os

        return item * item, os.getpid(), kwargs.get("_worker_name")

    def process_result(self, result):
        self.results.append(result)
        if result[0] < 0:
            return False
        return None
