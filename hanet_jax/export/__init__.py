"""Export a trained model for serving elsewhere: StableHLO, SavedModel, ONNX (`hanet-export`).

- `serving_function`: the function every format holds, from any checkpoint predict.py takes;
- `to_stablehlo`, `to_savedmodel`, `to_onnx`: one format each, traced with the CPU handlers off;
- `manifest`: export.json, what another runtime needs to reproduce predict.py;
- `cli`: the command. `hanet_jax.inference.exported` runs the artifacts.
"""
