"""The task registry: importing this package registers every built-in task in `TASKS`.

Engine contract beyond `Task`: every task here is a `SynthTask` with `bind(out_dir, args)`;
call it once after building the task and before the first `run` (stablellava writes its images
under `out_dir/images/`, llava-symbolic reads `args.response_types`, caption-expand
`args.long_caption_words`, stablellava `args.imagegen`, `args.imagegen_model`, `args.image_size`).
"""
from allava.synth.tasks import (  # noqa: F401 - imported for their registration side effect
    allava_laion,
    allava_vflan,
    caption_expand,
    llava_symbolic,
    stablellava,
    text_regen,
)
from allava.synth.tasks.common import SynthTask

__all__ = ["SynthTask"]
