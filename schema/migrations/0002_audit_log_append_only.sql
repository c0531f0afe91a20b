-- audit_log is append-only: rows are evidence, so neither the gateway nor an operator's stray
-- query may rewrite or delete them. (A retention job, if one is ever added, drops these triggers
-- in its own migration, visibly.) drizzle-kit cannot express triggers, hence a custom migration.
CREATE TRIGGER `audit_log_no_update` BEFORE UPDATE ON `audit_log`
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
--> statement-breakpoint
CREATE TRIGGER `audit_log_no_delete` BEFORE DELETE ON `audit_log`
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
