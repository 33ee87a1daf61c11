"""On-the-fly active learning as one ASE calculator: change one line of an MD script.

:class:`OnTheFlyCalculator` wraps a committee, an oracle and a label store. For every
geometry the dynamics asks about, it predicts with the committee and judges the
prediction with a selection rule:

* trusted: the committee's energy and forces are returned;
* uncertain or untrusted: the oracle labels the geometry (through
  :func:`pal_atoms.oracles.label`), the label is stored with its provenance, and the
  oracle's energy and forces are returned, so the trajectory stays on the reference
  surface. A label that failed is stored with its status, a warning is logged, and the
  committee's prediction is returned (never NaN).

Once ``retrain_size`` new ``ok`` labels have arrived, the committee is retrained on every
``ok`` label of the store: in a background thread on a copy of the committee whose
weights are swapped into the live committee at the next call (``background=True``), or
at once in the calling thread (``background=False``, deterministic).

Example:
    >>> atoms.calc = committee                                     # doctest: +SKIP
    >>> atoms.calc = OnTheFlyCalculator(committee, XTB(), "labels.h5")  # doctest: +SKIP
    >>> Langevin(atoms, ...).run(1000)                             # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from pal_atoms.calculators.graph import total_charge
from pal_atoms.core.errors import ConfigError
from pal_atoms.core.label import Label, LabelStatus
from pal_atoms.core.protocols import Verdict
from pal_atoms.store import LabelStore
from pal_atoms.workflow.selection import SelectionRule, TrustWindow

__all__ = ["OnTheFlyCalculator"]

logger = logging.getLogger(__name__)

#: Committee uncertainty keys copied into the results whatever the source of the numbers.
_UNCERTAINTY_KEYS = ("energy_std", "forces_std", "max_force_std")


class OnTheFlyCalculator(Calculator):
    """ASE calculator that labels what its committee does not trust, and retrains.

    Results (every call): ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å, shape
    ``[n_atoms, 3]``) from the committee when trusted, else from the oracle; the
    committee's ``energy_std`` (eV), ``forces_std`` (eV/Å, shape ``[n_atoms]``) and
    ``max_force_std`` (eV/Å) always. The decision of the last call is in
    :attr:`last_verdict`, :attr:`last_source` and :attr:`last_label_status`.

    Args:
        committee: Committee calculator (``predict_batch``, ``get_weights``,
            ``set_weights``), e.g. :class:`~pal_atoms.calculators.CommitteeCalculator`.
        oracle: Oracle (:class:`pal_atoms.oracles.Oracle`) labelling untrusted geometries.
        store: :class:`~pal_atoms.store.LabelStore`, or the path of one (opened here and
            closed by :meth:`close`). Written only from the calling thread.
        selection: Selection rule ``rule(atoms, results) -> Verdict`` (default
            :class:`~pal_atoms.workflow.selection.TrustWindow` on ``max_force_std``).
        trainer: Trainer with ``train(labels)`` bound to ``committee`` (a
            :class:`~pal_atoms.calculators.CommitteeTrainer`); ``None`` builds a
            ``CommitteeTrainer`` with default settings. In background mode it is copied
            together with the committee once, and the copy (optimizer state included)
            trains every later round.
        retrain_size: New ``ok`` labels that start a training round (``None``: never
            retrain; labels are only stored).
        background: Train in a background thread (``False``: in the calling thread).
        timeout_s: Kill an oracle call after this many seconds (status ``timeout``); the
            oracle then runs in a child process.
        isolate: Run the oracle in a child process (default: only with ``timeout_s``).
        generator_id: Generator id recorded with each label (provenance).
        label_fn: Labelling function ``label(atoms, oracle, *, timeout_s, isolate) ->
            Label`` (default :func:`pal_atoms.oracles.label`).
        **kwargs: Passed to :class:`ase.calculators.calculator.Calculator`.

    Raises:
        ConfigError: ``retrain_size < 1``, or a background trainer that is not bound to
            ``committee``.
    """

    implemented_properties = (  # type: ignore[assignment]  # ASE annotates a list
        "energy",
        "free_energy",
        "forces",
        "energy_std",
        "forces_std",
        "max_force_std",
    )

    def __init__(
        self,
        committee: Any,
        oracle: Any,
        store: LabelStore | str | Path,
        *,
        selection: SelectionRule | None = None,
        trainer: Any | None = None,
        retrain_size: int | None = 8,
        background: bool = True,
        timeout_s: float | None = None,
        isolate: bool | None = None,
        generator_id: int = 0,
        label_fn: Callable[..., Label] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if retrain_size is not None and (isinstance(retrain_size, bool) or retrain_size < 1):
            raise ConfigError(f"retrain_size must be >= 1 or None, got {retrain_size!r}")
        self.committee = committee
        self.oracle = oracle
        self.selection: SelectionRule = selection if selection is not None else TrustWindow()
        self.retrain_size = retrain_size
        self.background = background
        self.timeout_s = timeout_s
        self.isolate = timeout_s is not None if isolate is None else isolate
        self.generator_id = generator_id
        if label_fn is None:
            from pal_atoms.oracles import label as default_label

            label_fn = default_label
        self.label_fn: Callable[..., Label] = label_fn
        if trainer is None and retrain_size is not None:
            from pal_atoms.calculators.training import CommitteeTrainer

            trainer = CommitteeTrainer(committee)
        bound = getattr(trainer, "committee", None) is committee
        if trainer is not None and background and not bound:
            raise ConfigError(
                "background training copies the trainer with its committee: pass a trainer "
                "whose .committee is the committee given here (or background=False)"
            )
        self.trainer = trainer
        self._own_store = not isinstance(store, LabelStore)
        self.store = store if isinstance(store, LabelStore) else LabelStore(store)
        self._charge: int | None = None

        self.last_verdict: Verdict | None = None
        self.last_source: str = ""
        self.last_label_status: LabelStatus | None = None
        self.n_calls = 0
        self.n_trusted = 0
        self.n_labels = 0
        self.n_failed = 0
        self.n_training_rounds = 0
        self.last_training_error: BaseException | None = None
        self._labels_since_training = 0

        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._shadow: Any | None = None
        self._pending: tuple[list[Any], dict[str, Any], int] | None = None
        self._closed = False

    # ------------------------------------------------------------------ ASE contract
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's checks plus the total charge in ``atoms.info``."""
        changes: list[str] = super().check_state(atoms, tol)
        if self.atoms is not None and total_charge(atoms) != self._charge:
            changes.append("initial_charges")
        return changes

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Predict, judge, label if not trusted, maybe retrain; fill :attr:`results`."""
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None  # set by Calculator.calculate
        if self._closed:
            raise RuntimeError("OnTheFlyCalculator is closed")
        work = self.atoms
        self._charge = total_charge(work)
        self._apply_pending_weights()
        (prediction,) = self.committee.predict_batch([work])
        verdict = Verdict(self.selection(work, prediction))
        self.n_calls += 1
        self.last_verdict = verdict
        self.last_label_status = None
        results: dict[str, Any] = {k: prediction[k] for k in _UNCERTAINTY_KEYS}
        source = "committee"
        if verdict is Verdict.TRUSTED:
            self.n_trusted += 1
        else:
            lab = self._label(work, prediction)
            if lab.ok:
                assert lab.energy is not None
                assert lab.forces is not None
                results.update(energy=lab.energy, free_energy=lab.energy, forces=lab.forces)
                source = "oracle"
            else:
                source = "committee (label failed)"
        if source != "oracle":
            results.update(
                energy=float(prediction["energy"]),
                free_energy=float(prediction["free_energy"]),
                forces=np.asarray(prediction["forces"], dtype=float),
            )
        self.last_source = source
        self.results = results
        logger.debug(
            "call %d: %s (max_force_std %.4f eV/Å, energy_std %.4f eV) -> %s",
            self.n_calls,
            verdict,
            prediction["max_force_std"],
            prediction["energy_std"],
            source,
        )
        self._maybe_train()

    # ------------------------------------------------------------------ labelling
    def _label(self, atoms: Atoms, prediction: dict[str, Any]) -> Label:
        lab = self.label_fn(atoms, self.oracle, timeout_s=self.timeout_s, isolate=self.isolate)
        self.store.append_label(
            lab,
            generator_id=self.generator_id,
            generator_step=self.n_calls - 1,
            uncertainty=float(prediction["max_force_std"]),
        )
        self.last_label_status = lab.status
        if lab.ok:
            self.n_labels += 1
            self._labels_since_training += 1
        else:
            self.n_failed += 1
            logger.warning(
                "oracle label %s at call %d (%s); returning the committee prediction",
                lab.status,
                self.n_calls,
                lab.error.splitlines()[0] if lab.error else "no error text",
            )
        return lab

    # ------------------------------------------------------------------ training
    @property
    def training_running(self) -> bool:
        """True while a background training round runs."""
        return self._thread is not None and self._thread.is_alive()

    def _maybe_train(self) -> None:
        if (
            self.trainer is None
            or self.retrain_size is None
            or self._labels_since_training < self.retrain_size
            or self.training_running
        ):
            return
        labels = self.store.read(status="ok")
        if not labels:
            return
        self._labels_since_training = 0
        if not self.background:
            logger.info("training round %d on %d labels", self.n_training_rounds + 1, len(labels))
            self.trainer.train(labels)
            self.n_training_rounds += 1
            return
        if self._shadow is None:
            # Copies the trainer's committee (the live one) and its optimizer state together.
            self._shadow = copy.deepcopy(self.trainer)
        logger.info(
            "training round %d on %d labels started in the background",
            self.n_training_rounds + 1,
            len(labels),
        )
        self._thread = threading.Thread(
            target=self._train_shadow, args=(labels,), name="pal-atoms-otf-training", daemon=True
        )
        self._thread.start()

    def _train_shadow(self, labels: list[Atoms]) -> None:
        """Body of the training thread: train the copy, hand its weights over."""
        shadow = self._shadow
        assert shadow is not None
        try:
            shadow.train(labels)
            weights = shadow.committee.get_weights()
            metadata = copy.deepcopy(shadow.committee.metadata)
        except Exception as exc:  # a failed round must not end the MD; it is logged
            logger.exception("background training on %d labels failed", len(labels))
            with self._lock:
                self.last_training_error = exc
            return
        with self._lock:
            self._pending = (weights, metadata, len(labels))

    def _apply_pending_weights(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        weights, metadata, n = pending
        self.committee.set_weights(weights)
        if isinstance(getattr(self.committee, "metadata", None), dict):
            self.committee.metadata = metadata
        self.n_training_rounds += 1
        logger.info("committee weights updated (training round on %d labels)", n)

    def wait_for_training(self) -> None:
        """Wait for a running background round and put its weights into the committee."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._apply_pending_weights()

    # ------------------------------------------------------------------ life cycle
    def stats(self) -> dict[str, int]:
        """Counters: calls, trusted calls, ok and failed labels, training rounds."""
        return {
            "calls": self.n_calls,
            "trusted": self.n_trusted,
            "labels": self.n_labels,
            "failed": self.n_failed,
            "training_rounds": self.n_training_rounds,
        }

    def close(self) -> None:
        """Wait for background training, apply its weights, close a store opened here.

        Idempotent. Labels that arrived since the last round are not trained on.
        """
        if self._closed:
            return
        self.wait_for_training()
        if self._own_store:
            self.store.close()
        self._closed = True

    def __enter__(self) -> OnTheFlyCalculator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
