"""`make bench`: the watermark engine, then authoring and checking whole discs."""

from bench import disc_bench, watermark_bench

watermark_bench.main()
disc_bench.main()
