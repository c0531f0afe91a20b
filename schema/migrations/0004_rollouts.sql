CREATE TABLE `rollout_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`rollout_id` text NOT NULL,
	`at` integer NOT NULL,
	`actor` text NOT NULL,
	`kind` text NOT NULL,
	`request_id` text,
	`detail` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `rollout_events_rollout_idx` ON `rollout_events` (`rollout_id`,`id`);--> statement-breakpoint
CREATE TABLE `rollouts` (
	`id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`model` text NOT NULL,
	`strategy` text NOT NULL,
	`status` text NOT NULL,
	`running` integer NOT NULL,
	`spec` text NOT NULL,
	`state` text NOT NULL,
	`result` text,
	`created_by` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`ends_at` integer,
	`ended_at` integer
);
--> statement-breakpoint
CREATE INDEX `rollouts_kind_created_idx` ON `rollouts` (`kind`,`created_at`);--> statement-breakpoint
CREATE UNIQUE INDEX `rollouts_one_running_per_model_idx` ON `rollouts` (`model`) WHERE running = 1;--> statement-breakpoint
ALTER TABLE `models` ADD `previous_warm` integer DEFAULT true NOT NULL;--> statement-breakpoint
CREATE TRIGGER `rollout_events_no_update` BEFORE UPDATE ON `rollout_events`
BEGIN
  SELECT RAISE(ABORT, 'rollout_events is append-only');
END;
--> statement-breakpoint
CREATE TRIGGER `rollout_events_no_delete` BEFORE DELETE ON `rollout_events`
BEGIN
  SELECT RAISE(ABORT, 'rollout_events is append-only');
END;
