"Run the s3lib command line: `python -m s3lib ...`."
import sys

from s3lib.cli import main

sys.exit(main())
