"""The stage's progress bar and its clock.

The bar is labelled with the stage and shows loss, learning rate, samples/s and tokens/s (tqdm
adds the ETA) instead of the Trainer's raw log dicts on stdout, and ends with one labelled summary
line. The clock counts the seconds spent training over every process that ran the stage: it is
saved in each checkpoint (``ExportableState``) and restored from it on resume (by us: the
Trainer's own restore would replace the callback object), so the rates of a resumed stage are its
whole run's, not only the last process's.
"""
from __future__ import annotations

import time

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, PrinterCallback, ProgressCallback


class StageProgress(TrainerCallback, ExportableState):
    def __init__(self, stage: str, enabled: bool = True, samples_per_step: int = 1, train_s: float = 0.0):
        self.stage = stage
        self.enabled = enabled
        self.samples_per_step = samples_per_step  # the global batch
        self.train_s = train_s  # seconds trained before this process (restored from the checkpoint)
        self.bar: tqdm | None = None
        self._t0: float | None = None
        self._session_s = 0.0
        self._start_step = 0
        self._start_tokens = 0

    # -- ExportableState: what a checkpoint keeps ------------------------------------------------
    def state(self) -> dict:
        return {"args": {"stage": self.stage, "samples_per_step": self.samples_per_step},
                "attributes": {"train_s": self.seconds()}}

    def restore(self, saved: list | dict | None) -> None:
        """Take the clock from a checkpoint's ``TrainerState.stateful_callbacks`` entry."""
        saved = saved[-1] if isinstance(saved, list) and saved else saved
        if isinstance(saved, dict):
            self.train_s = float(saved.get("attributes", {}).get("train_s", 0.0))

    def seconds(self) -> float:
        """Training seconds of the whole stage so far (earlier processes included)."""
        running = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self.train_s + self._session_s + running

    # -- callbacks -------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step:  # resumed: the state is the checkpoint's (the Trainer does not restore us itself)
            self.restore(state.stateful_callbacks.get(type(self).__name__))
        self._t0 = time.perf_counter()
        self._start_step, self._start_tokens = state.global_step, state.num_input_tokens_seen
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=f"{self.stage} steps",
                            unit="step", dynamic_ncols=True, disable=not self.enabled)

    def rates(self, state) -> tuple[float, float]:
        """(samples/s, tokens/s) of this process's steps (its own wall clock)."""
        dt = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        if dt <= 0:
            return 0.0, 0.0
        return ((state.global_step - self._start_step) * self.samples_per_step / dt,
                (state.num_input_tokens_seen - self._start_tokens) / dt)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            sps, tps = self.rates(state)
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{logs.get('learning_rate', 0.0):.2e}",
                                 samples_s=f"{sps:.1f}", tokens_s=f"{tps:.0f}")
        elif "train_runtime" in logs and self.enabled:
            sps, tps = self.rates(state)
            self.bar.write(f"{self.stage}: {state.global_step} steps in {logs['train_runtime']:.0f} s "
                           f"({logs.get('train_steps_per_second', 0.0):.2f} steps/s, {sps:.1f} samples/s, "
                           f"{tps:.0f} tokens/s), mean loss {logs.get('train_loss', float('nan')):.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self._session_s += time.perf_counter() - self._t0
            self._t0 = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_stage_progress(trainer, stage: str, enabled: bool, samples_per_step: int = 1) -> StageProgress:
    """Swap the Trainer's own printers (a bare bar, raw dicts) for the stage's labelled bar."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    progress = StageProgress(stage, enabled, samples_per_step)
    trainer.add_callback(progress)
    return progress
