"""cnnstudy: study how CNN design choices change training."""

import warnings

# Lightning 2.6 calls a pytree API that torch 2.14 deprecates; the warning is theirs, not the user's.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
