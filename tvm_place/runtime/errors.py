"""Errors of the runtime: a stage that fails, a worker that dies or cannot be reached, a timeout.

Every one is a :class:`tvm_place.errors.TvmPlaceError`. A failure during a run names the stage, its
device and worker, and the index of the input it was processing; inputs that finished before it
are kept in ``completed`` (in input order), so nothing of a stream is lost without a word.
"""

from __future__ import annotations

from ..errors import TvmPlaceError


class DeviceUnavailableError(TvmPlaceError, RuntimeError):
    """A stage's device does not exist on this machine."""


class WorkerError(TvmPlaceError, RuntimeError):
    """A stage worker cannot be started, reached or used."""


class WorkerUnreachableError(WorkerError):
    """No Ray cluster answers at the address given."""


class StageError(TvmPlaceError, RuntimeError):
    """A stage failed on one input of a run.

    Attributes: ``stage`` (name), ``device`` (placement device name, e.g. ``cpu:1``), ``worker``
    (label), ``input_index`` (position in the stream), ``completed`` (outputs of the inputs that
    finished before the failure, in input order), ``num_inputs`` (inputs submitted so far).
    """

    def __init__(self, message: str, *, stage: str | None = None, device: str | None = None,
                 worker: str | None = None, input_index: int | None = None):
        super().__init__(message)
        self.stage = stage
        self.device = device
        self.worker = worker
        self.input_index = input_index
        self.completed: list = []
        self.num_inputs: int | None = None


class WorkerDiedError(StageError):
    """The process running a stage died (killed, crashed) or its connection broke."""


class StageTimeoutError(StageError):
    """A stage (or a copy) took longer than the run's timeout on one input."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) ended a run. ``completed``: the outputs of the inputs that finished before
    it, in input order; ``num_inputs``: inputs submitted. A ``KeyboardInterrupt``, so it ends the
    program as Ctrl-C does unless caught."""

    def __init__(self, message: str):
        super().__init__(message)
        self.completed: list = []
        self.num_inputs: int | None = None
