import sys

from stnkit.cli import main

sys.exit(main())
