"""An installed plugin (found through its package) used by ``callboard bench plugins``."""
