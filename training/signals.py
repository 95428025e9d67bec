"""Signals that let later apps react to training without training importing them.

`training_job_succeeded` is sent by the runner once a job's trainer finished and its results are
fetched and verified, inside the runner's completion step, with `job` (the TrainingJob) and
`result_dir` (a local folder with `adapter/` and `manifest.json`). The adapters app connects
the receiver that stores the files and creates the adapter version; the runner reads the
receivers' return values to log which version was created.
"""

from django.dispatch import Signal

training_job_succeeded = Signal()
