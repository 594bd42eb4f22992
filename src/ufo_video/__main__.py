"""`python -m ufo_video ...` — also what `accelerate launch -m ufo_video train ...` runs."""

from ufo_video.cli import main

raise SystemExit(main())
