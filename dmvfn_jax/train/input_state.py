"""The training batches from the resumed step on, and the input state the checkpoints keep."""

from __future__ import annotations

import logging

from dmvfn_jax.data.stream import StreamSource, close_iterator

log = logging.getLogger("dmvfn_jax")


class TrainingInput:
    """The training batches from the resumed step on. For the clip sources they come from a Grain
    iterator (`grain`) over batches `offset`, ..., whose state every checkpoint saves (`input`)
    and a resumed run restores; the synthetic source is addressed by step alone (`grain` None)."""

    def __init__(self, source, mngr, start: int, total: int, meta: dict | None):
        self.grain, self.offset = None, start
        if isinstance(source, StreamSource):
            self.grain = self._restored(source, mngr, start, meta)
            if self.grain is None:
                self.grain = source.iterator(start)
            self.batches = self.grain
        else:
            self.batches = source.batches(start, total)

    def _restored(self, source, mngr, start: int, meta: dict | None):
        """The iterator as the checkpoint of `start` saved it, or None (then the input restarts at
        `start`: the same batches, since they are addressed by step)."""
        if meta is None:
            return None
        if meta.get("input_offset") is None:
            log.warning("the checkpoint of step %d holds no input state (written before the input moved to Grain): "
                        "the clip order from here on is Grain's, not the one the run started with", start)
            return None
        import grain
        import orbax.checkpoint as ocp

        offset = int(meta["input_offset"])
        it = source.iterator(offset)
        try:
            mngr.restore(start, args=ocp.args.Composite(input=grain.checkpoint.CheckpointRestore(it)))
        except Exception as e:  # noqa: BLE001 - e.g. another process count: the step is enough
            close_iterator(it)
            log.warning("the input state of step %d could not be restored (%s); the input restarts at "
                        "step %d, the same batches (they are addressed by step)", start,
                        str(e).splitlines()[0] if str(e) else type(e).__name__, start)
            return None
        self.offset = offset
        log.info("the input continues from the Grain iterator state saved at step %d", start)
        return it

    def close(self) -> None:
        close_iterator(self.batches)
