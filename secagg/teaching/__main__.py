"""``python -m secagg.teaching [DIR]``: regenerate the documentation's trace pages."""

from secagg.teaching.pages import main

raise SystemExit(main())
