"""The imports a run's engine needs, done when the trainer process starts rather than when its first run arrives.

Building the first TrainingEngine otherwise imports transformers' auto classes and DeepSpeed's engine, and DeepSpeed's
ZeRO optimizer check imports its Muon optimizer, which imports torch's inductor: ~6-9 s of a 2-core CPU (measured:
engine init 9.7 s cold, 1.0 s warm), all of it between a run's start and its first step. At process start it
overlaps the other services' start-up (the generator's vLLM engine build takes longer) and every later run of the
process finds them loaded.
"""

from __future__ import annotations

import importlib
import logging
import time

from semirl.trainer.distributed import import_deepspeed

log = logging.getLogger(__name__)

WARM_MODULES = (
    "transformers.models.auto.modeling_auto",
    "transformers.modeling_layers",
    "transformers.integrations.deepspeed",
    "deepspeed.runtime.engine",
    # deepspeed.initialize's ZeRO optimizer check imports it (and with it torch._inductor) on every first engine
    "deepspeed.runtime.zero.muon.muon_optimizer",
)


def import_training_stack() -> None:
    """Import what building a TrainingEngine imports, and log the seconds it took. A module a DeepSpeed or
    transformers version lacks is skipped: the warm-up only moves work earlier, it changes nothing."""
    started = time.perf_counter()
    import_deepspeed()
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            log.debug("warm-up: %s is not importable here", name, exc_info=True)
    log.info("training stack imported in %.1f s", time.perf_counter() - started)
