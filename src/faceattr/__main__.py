import sys

from faceattr.cli.main import main

sys.exit(main())
