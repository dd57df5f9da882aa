"""cnnstudy: study how CNN design choices change training."""
