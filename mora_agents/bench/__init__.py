"""`mora bench`: the paper's workloads on real-size models with random weights, `reference` vs `ours`.

Modules: `build` (shipped configs, random weights on the device), `configurations` (how each configuration
sets up its pipelines), `workloads` (the paper's tasks, split into timed stages), `measure` (clocks, peak
memory, denoiser time and FLOPs, PSNR), `runner` (warm-up, repeats, rows), `report` (JSON and Markdown), `cli`.
"""
