"""Trains or evaluates a jwsol job: python train.py --config configs/NAME.py[:VARIANT] --workdir DIR.

Intentionally kept short: the command line is `jwsol.train` (also installed as `jwsol-train`).
"""

from jwsol.train import main

if __name__ == "__main__":
    main()
