//! WAL archiving and base backups to S3 (issue "continuous archiving").
