"""Teachers register themselves in `allava.synth.base.TEACHERS` on import."""
from allava.synth.teachers import openai  # noqa: F401

try:  # the offline scene-graph teacher (optional module)
    from allava.synth.teachers import scene  # noqa: F401
except ImportError:  # pragma: no cover
    pass
