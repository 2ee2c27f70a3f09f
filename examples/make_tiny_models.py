"""Write the two random-weight models ``examples/distill_tiny.toml`` distils (no torch needed).

    python examples/make_tiny_models.py [OUT_DIR]     # default: examples/tiny_models

A teacher (64 wide, 3 layers, 307-token vocabulary) and a smaller student (48
wide, 2 layers, 211-token vocabulary: a different tokenizer), both ending in a
24-dim normalised embedding, saved as tarka-jax Flax folders with their own
WordPiece tokenizers. Random weights: the point is to exercise the loop end to
end in seconds, not to produce a useful model.
"""

from __future__ import annotations

import argparse
import os

from tarka_jax.testing.tiny import write_tiny_models

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join(os.path.dirname(__file__),
                                                               "tiny_models"),
                        help="output folder (default: examples/tiny_models); an earlier "
                             "output of this script there is replaced, nothing else")
    teacher, student = write_tiny_models(parser.parse_args().out)
    print(f"wrote {teacher} and {student}")
