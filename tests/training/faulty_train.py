"""train.py that kills itself with SIGKILL at a chosen moment (tests/training/test_faults.py).

  python tests/training/faulty_train.py WHERE N TRAIN_ARGS...

WHERE is `save` (the N-th checkpoint save of this process, after its data are written and
before orbax moves them into place), `eval` (the N-th evaluation, after its first predicted
batch), `bug` (an exception that is not the user's, for the exit status) or `none`.
"""

import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_inside_save(n: int) -> None:
    from orbax.checkpoint._src.path import atomicity

    finalize, calls = atomicity.AtomicRenameTemporaryPath.finalize, [0]

    async def finalize_or_die(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:  # the step's item folder is written, not yet renamed into place
            _die()
        return await finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die


def _kill_inside_eval(n: int) -> None:
    from jwsol.training import loop

    evaluate, calls = loop.Runner.evaluate, [0]

    def evaluate_or_die(self, state, ctx):
        calls[0] += 1
        if calls[0] != n:
            return evaluate(self, state, ctx)
        predictions = self._predictions

        def die_after_first(variables, batches, final=False):
            for item in predictions(variables, batches, final):
                yield item
                _die()

        self._predictions = die_after_first
        return evaluate(self, state, ctx)

    loop.Runner.evaluate = evaluate_or_die


def _bug() -> None:
    from jwsol.training import loop

    def run(*args, **kwargs):
        raise ZeroDivisionError("made up for the test")

    loop.run = run


def main() -> None:
    where, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    {
        "save": _kill_inside_save,
        "eval": _kill_inside_eval,
        "bug": lambda n: _bug(),
        "none": lambda n: None,
    }[where](n)
    sys.argv = ["train.py", *args]
    runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
