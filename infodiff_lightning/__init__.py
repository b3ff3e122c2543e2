"""infodiff-lightning."""
