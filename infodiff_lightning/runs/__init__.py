"""What a run needs around the measurements: the command-line wrappers (cli.py), safe
checkpoint loading (checkpoints.py), the run folder's lock (run_lock.py) and input
fingerprint (run_inputs.py), figures (viz.py) and per-image map files (map_files.py).
"""
