import sys

from pvnas.cli import main

sys.exit(main())
