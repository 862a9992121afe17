"""mmattn evaluation."""
