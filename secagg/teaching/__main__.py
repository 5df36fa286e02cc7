"""``python -m secagg.teaching [DIR]``: regenerate the documentation's trace pages."""

from secagg.teaching.pages import main

if __name__ == "__main__":
    raise SystemExit(main())
