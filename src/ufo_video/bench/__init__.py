"""`ufo-video bench`: performance targets measured as interleaved side-by-side ratios."""
