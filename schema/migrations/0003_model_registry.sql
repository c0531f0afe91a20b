CREATE TABLE `model_aliases` (
	`name` text NOT NULL,
	`alias` text NOT NULL,
	`version` text NOT NULL,
	PRIMARY KEY(`name`, `alias`)
);
--> statement-breakpoint
CREATE TABLE `model_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`version` text,
	`kind` text NOT NULL,
	`actor` text NOT NULL,
	`at` integer NOT NULL,
	`request_id` text,
	`detail` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `model_events_name_idx` ON `model_events` (`name`,`id`);--> statement-breakpoint
CREATE TABLE `model_metrics` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`model_id` text NOT NULL,
	`name` text NOT NULL,
	`version` text NOT NULL,
	`source` text NOT NULL,
	`label` text,
	`recorded_at` integer NOT NULL,
	`pool` text,
	`window_start` integer,
	`window_end` integer,
	`metrics` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `model_metrics_version_idx` ON `model_metrics` (`name`,`version`,`recorded_at`);--> statement-breakpoint
CREATE TABLE `model_tags` (
	`name` text NOT NULL,
	`version` text DEFAULT '' NOT NULL,
	`tag` text NOT NULL,
	PRIMARY KEY(`name`, `version`, `tag`)
);
--> statement-breakpoint
CREATE TABLE `model_versions` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`name` text NOT NULL,
	`version` text NOT NULL,
	`status` text DEFAULT 'registered' NOT NULL,
	`description` text,
	`model_type` text,
	`framework` text,
	`model_path` text,
	`source` text NOT NULL,
	`sha256` text,
	`size` integer,
	`parameters` text NOT NULL,
	`parent` text,
	`dependencies` text NOT NULL,
	`performance_metrics` text NOT NULL,
	`placement` text,
	`prepare_until` integer,
	`artifact_key` text,
	`artifact_stored_at` integer,
	`created_at` integer NOT NULL,
	`created_by` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `model_versions_name_version_idx` ON `model_versions` (`name`,`version`);--> statement-breakpoint
CREATE TABLE `models` (
	`name` text PRIMARY KEY NOT NULL,
	`active_version` text,
	`previous_version` text,
	`description` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
-- model_events is append-only, like audit_log (0002): the registry's history and its revision
-- (max id) must never move backwards. drizzle-kit cannot express triggers, hence hand-appended.
CREATE TRIGGER `model_events_no_update` BEFORE UPDATE ON `model_events`
BEGIN
  SELECT RAISE(ABORT, 'model_events is append-only');
END;
--> statement-breakpoint
CREATE TRIGGER `model_events_no_delete` BEFORE DELETE ON `model_events`
BEGIN
  SELECT RAISE(ABORT, 'model_events is append-only');
END;
