"""Benchmark grids: their definition (grid), running them under locks on an executor (runner, executors),
the tidy results store (results) and a grid's state (status)."""
