import sys

from discmaker.ui.cli import main

sys.exit(main())
