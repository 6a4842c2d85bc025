"""A CSV log that a resumed run continues instead of starting over."""

import csv
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ResumableCSVLogger(CSVLogger):
    """Lightning's :class:`~lightning.pytorch.loggers.CSVLogger`, except that a run resumed into the same log folder
    appends to the ``metrics.csv`` there; by default ``save_dir/metrics.csv``, with no ``lightning_logs/version_N``."""

    def __init__(self, save_dir: str | Path, name: str | None = "", version: int | str | None = "", prefix: str = "",
                 flush_logs_every_n_steps: int = 100):
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        kept = path.read_text() if path.is_file() else ""
        writer = super().experiment  # deletes metrics.csv
        if kept:
            path.write_text(kept)
            writer.metrics_keys = next(csv.reader(kept.splitlines()))  # so that new rows append under the same header
        return writer
