"""What every layer shares: the run configuration (config), the decoder kinds and metric declarations,
file writes (io), the run folder (rundir), progress lines and the version. Imports no other textsvae package."""
