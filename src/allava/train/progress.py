"""The stage's progress bar: labelled with the stage, loss and learning rate in the bar instead of
the Trainer's raw log dicts on stdout, and one labelled summary line at the end."""
from __future__ import annotations

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class StageProgress(TrainerCallback):
    def __init__(self, stage: str, enabled: bool = True):
        self.stage = stage
        self.enabled = enabled
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=f"{self.stage} steps",
                            unit="step", dynamic_ncols=True, disable=not self.enabled)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{logs.get('learning_rate', 0.0):.2e}")
        elif "train_runtime" in logs and self.enabled:
            self.bar.write(f"{self.stage}: {state.global_step} steps in {logs['train_runtime']:.0f} s "
                           f"({logs.get('train_steps_per_second', 0.0):.2f} steps/s), "
                           f"mean loss {logs.get('train_loss', float('nan')):.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_stage_progress(trainer, stage: str, enabled: bool) -> None:
    """Swap the Trainer's own printers (a bare bar, raw dicts) for the stage's labelled bar."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StageProgress(stage, enabled))
