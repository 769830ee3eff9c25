"""File names of the two serving graphs logged beside every registered model (``extra_files/``).

In a module of its own, without torch: the predictor needs only these names to find the graphs,
and importing them from ``training.export`` cost every serving process (each backfill worker, the
API, the daily run) about 3 s of torch and torch-geometric imports it never used.
``training.export`` writes the files under these names (it imports them from here).
"""

SERVING_PARTS = {"spatial": "serving_spatial.onnx", "temporal": "serving_temporal.onnx"}

__all__ = ["SERVING_PARTS"]
