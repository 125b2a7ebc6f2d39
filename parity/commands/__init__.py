"""Commands: the ``parity`` console command. Kept free of imports: ``entry`` guards Ctrl-C
from the first heavy import."""
