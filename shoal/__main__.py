"""`python -m shoal ...`: the same CLI as the `shoal` script.

Delegates to shoal.cli.main.main.
"""
from shoal.cli.main import main

if __name__ == "__main__":
    main()
