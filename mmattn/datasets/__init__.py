"""mmattn datasets."""
