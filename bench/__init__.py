"""leadmail's benchmark: `python -m bench` (or `make bench`).

Starts the sandbox (local Google) in this process and the service under uvicorn in
separate processes, all over loopback, measures the sync path's figures, prints one
table and, as its last line, the same figures as JSON. See `bench/README.md`.
"""
