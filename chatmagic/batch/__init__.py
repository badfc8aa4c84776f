"""The provider Batch APIs (--batch): the batch file, the store of submitted batches, the run and its admin."""
