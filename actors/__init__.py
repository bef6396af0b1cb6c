"""The three layers as pure cores plus thin Ray actor shells: twin (micro), agent (macro), gateway (human)."""
