import sys

from tangentlens.cli import main

sys.exit(main())
