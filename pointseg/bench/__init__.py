"""Benchmarks of the trainer and of whole-scene prediction (they train or time; `make bench`, `make bench-predict`).

Each writes a committed table under results/ that the report reads (pointseg.bench.table formats it without torch).
"""
