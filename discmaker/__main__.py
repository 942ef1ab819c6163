import sys

from discmaker.cli import main

sys.exit(main())
