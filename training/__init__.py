import os

# LightGBM's OpenMP threads spin while waiting by default; when DuckDB, another job or a second
# process share the cores, that spinning slowed training twenty-fold (measured: 1.3 s -> 26 s for
# the same booster). Passive waiting costs little when the cores are free. It must be set before
# the OpenMP runtime loads, i.e. before the first `import lightgbm`, hence here; an explicit
# setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
