"""Deploying a trained model outside this package: the predictor as a StableHLO artifact or an ONNX
graph written from the parameters (`export.py`, `python -m dmvfn_jax.deploy.export`; the graph:
`onnx_graph.py`)."""
