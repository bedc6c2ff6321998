"""Bar imports (ImportBars, ImportBarStream, `bullant import-bars`): rows, their rules, one import, the use cases."""
