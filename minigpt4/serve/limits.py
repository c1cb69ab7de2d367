"""The batcher's defaults, which the command line shows in its ``--help`` (a module without
torch, so that the help answers at once)."""

DEFAULT_MAX_BATCH_SIZE = 16  # most answers generated together
DEFAULT_MAX_WAIT_S = 0.05  # the longest a batch waits for requests still being prepared
