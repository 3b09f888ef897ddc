//! Azure Blob sink: filled by its own issue.
