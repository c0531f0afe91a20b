CREATE TABLE `structured_schemas` (
	`name` text PRIMARY KEY NOT NULL,
	`schema` text NOT NULL,
	`description` text,
	`created_at` integer NOT NULL,
	`created_by` text NOT NULL
);
