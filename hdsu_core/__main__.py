import sys

from hdsu_core.cli import main

sys.exit(main())
