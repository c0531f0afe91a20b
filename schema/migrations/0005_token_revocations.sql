CREATE TABLE `token_revocation_state` (
	`id` integer PRIMARY KEY NOT NULL,
	`revision` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `token_revocations` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`value` text NOT NULL,
	`reason` text,
	`until` integer,
	`revoked_at` integer NOT NULL,
	`revoked_by` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `token_revocations_kind_value_idx` ON `token_revocations` (`kind`,`value`);--> statement-breakpoint
CREATE INDEX `audit_log_actor_idx` ON `audit_log` (`actor`,`id`);