-- Long operations that must survive their process: who runs each (owner + a lease it renews),
-- where it is (step) and what it has made or reserved so far (state, JSON), so that another
-- process can finish or undo it when the lease runs out. Times are unix seconds; the lease is
-- in milliseconds.
CREATE TABLE `operation` (
  `operation_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `kind` VARCHAR(64) NOT NULL,
  `resource_id` VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `status` VARCHAR(16) NOT NULL,
  `step` VARCHAR(64) NOT NULL DEFAULT '',
  `state` TEXT NOT NULL,
  `owner` VARCHAR(128) NULL,
  `lease_until_ms` BIGINT UNSIGNED NULL,
  `error_message` VARCHAR(2048) NULL,
  `create_time` BIGINT UNSIGNED NOT NULL,
  `update_time` BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (`operation_id`),
  KEY `idx_operation_kind` (`kind`),
  KEY `idx_operation_status_lease` (`status`, `lease_until_ms`),
  KEY `idx_operation_owner` (`owner`),
  KEY `idx_operation_resource` (`resource_id`),
  KEY `idx_operation_create_time` (`create_time`, `operation_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
