CREATE TABLE `injection_detections` (
	`route` text NOT NULL,
	`rule` text NOT NULL,
	`mode` text NOT NULL,
	`count` integer NOT NULL,
	PRIMARY KEY(`route`, `rule`, `mode`)
);
--> statement-breakpoint
CREATE TABLE `injection_policies` (
	`route` text NOT NULL,
	`model` text NOT NULL,
	`mode` text NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by` text NOT NULL,
	PRIMARY KEY(`route`, `model`)
);
