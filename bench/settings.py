"""Settings of the benchmark server: the product's settings, plus bench-only URLs when asked.

`BENCH_ROOT_URLCONF=bench.bench_urls` (set by `bench.env.Server`) adds the trivial baseline
endpoint and a readiness ping next to the product's own URLs; the product never routes them.
"""

import os

from synapsex_site.settings import *  # noqa: F403
from synapsex_site.settings import ROOT_URLCONF as _PRODUCT_URLCONF

ROOT_URLCONF = os.environ.get("BENCH_ROOT_URLCONF", _PRODUCT_URLCONF)
