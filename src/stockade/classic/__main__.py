import sys

from stockade.classic import main

sys.exit(main())
