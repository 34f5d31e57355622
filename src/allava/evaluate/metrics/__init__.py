"""Answer normalizers and parsers, written to match each anchor's official scorer rule for rule."""
