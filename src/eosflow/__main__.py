import sys

from .experiments import main

sys.exit(main())
