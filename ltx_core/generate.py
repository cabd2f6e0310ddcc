"""Command-line video generator: `python -m ltx_core.generate`.

Generation needs the sampler, the VAE and the text encoder, which are not part of this release yet;
until then the command says so instead of pretending.
"""

from __future__ import annotations

import sys

NOT_YET = (
    "ltx_core.generate: video generation is not available yet. This release contains the LTX-Video "
    "transformer (ltx_core.LTXVideoTransformer); the sampler, VAE and text encoder follow. "
    "Run the tests to see what works today."
)


def main() -> int:
    print(NOT_YET, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
