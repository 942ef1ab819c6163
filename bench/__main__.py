"""`make bench`: the watermark engine, then authoring and checking whole discs.

Each part runs in its own process, so one part's memory high-water mark cannot leak into the
next part's peak-memory figures (Linux carries ``ru_maxrss`` across exec).
"""

import subprocess
import sys

for part in ("bench.watermark_bench", "bench.disc_bench", "bench.station_bench"):
    subprocess.run([sys.executable, "-m", part], check=True)
