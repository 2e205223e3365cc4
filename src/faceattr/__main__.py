import sys

from faceattr.cli import main

sys.exit(main())
