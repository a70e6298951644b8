"""The benchmark definitions (one TOML file per table); installed with the package as `textsvae.grids`."""
