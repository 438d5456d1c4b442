import sys

from cortexd.cli import main

sys.exit(main())
