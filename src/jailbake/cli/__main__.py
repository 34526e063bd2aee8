"""python -m jailbake.cli"""

import sys

from .main import main

sys.exit(main())
